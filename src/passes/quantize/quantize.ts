// quantize: weights to fp16, int8 or int4 (block-wise, round-to-nearest or GPTQ) or w8a8, written as an
// ONNX artifact (MatMulNBits / GatherBlockQuantized / DynamicQuantizeMatMul) or as a Hugging Face checkpoint
// for vLLM and the other engines (compressed-tensors, GPTQ, AWQ). Options are validated before anything is written.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InputError } from '../../core/errors.js';
import type { AttentionForm } from '../../core/io.js';
import { OptionError, type OptionValues } from '../options.js';
import type { QUANTIZE_OPTIONS } from './definition.js';
import { Checkpoint } from '../../formats/safetensors.js';
import { readOnnxInitializers } from '../../formats/onnx/initializers.js';
import { writeModelFolder } from '../../formats/model-folder.js';
import { findModelFile } from '../../formats/artifact.js';
import type { PassRecord } from '../../formats/manifest.js';
import { openHfModel, type HfModel } from '../../model/checkpoint.js';
import { floatLinear, type LinearEmitter } from '../../model/linear.js';
import { exportModel } from '../export.js';
import { calibrateLayerwise, loadModelCalibration, type CalibrationSet, type LayerwiseMethod } from '../calibration.js';
import { selectTargets, type LinearModule } from '../targets.js';
import { quantizeRtn, type QuantGrid } from './blockwise.js';
import { checkHfMix, gridOf, hfMixTie, hfSchemeProblem, planHfTargets, writeHfFormat } from './hf-formats.js';
import { dequantize, type BlockQuantConfig, type BlockQuantized } from '../../core/block-quant.js';
import { gptqQuantize } from './gptq.js';
import { awqMethod, awqSummary, emptyAwqResult } from './awq.js';
import { clipChooser, hessianDiagonal, type ClipMode } from './clip.js';
import { matMulNBitsLinear, quantizedEmbedding, type AccuracyLevel } from './matmul-nbits.js';
import { fp16Embedding, fp16Linear, w8a8Linear } from './precision.js';
import { qatMismatch, trainedScheme } from './qat.js';
import { configOf, LM_HEAD_MODULE, mixHighConfig, planOnnxMix, validateMixOptions, type OnnxMixPlan } from './mix-policy.js';

export const QUANT_TARGETS = ['fp16', 'int8', 'int4', 'w8a8'] as const;
export type QuantTarget = (typeof QUANT_TARGETS)[number];
export const QUANT_METHODS = ['rtn', 'gptq', 'awq', 'awq+gptq'] as const;
export type QuantMethod = (typeof QUANT_METHODS)[number];
/** The methods that read calibration text (--calib). */
export const CALIBRATED_METHODS: readonly QuantMethod[] = ['gptq', 'awq', 'awq+gptq'];
export const QUANT_FORMATS = ['onnx', 'compressed-tensors', 'gptq', 'awq'] as const;
export type QuantFormat = (typeof QUANT_FORMATS)[number];
export const BLOCK_SIZES = [16, 32, 64, 128] as const;

/** The pass's options: the declared ones (quantize/definition.ts), with `symmetric` for --asymmetric. */
type Declared = OptionValues<typeof QUANTIZE_OPTIONS>;
type Optional = 'calibSamples' | 'actOrder' | 'dampening' | 'serveDtype' | 'strict' | 'mix' | 'targetBits' | 'clip';
// `to`, `format` and `fallback` also declare --format gguf's values (quantize/gguf.ts); this path takes its own.
type GgufOnly = 'to' | 'format' | 'fallback';
// The definition leaves attention, accuracyLevel and quantizeEmbeddings to the device's defaults; here they are resolved.
type Resolved = 'accuracyLevel' | 'attention' | 'floatEmbeddings' | 'device' | 'activationResidual';
export type QuantizeOptions = Omit<
  Declared,
  Optional | GgufOnly | Resolved | 'asymmetric' | 'symmetric' | 'eval' | 'output' | 'json' | 'quiet'
> &
  Partial<Pick<Declared, Optional>> & {
    to: QuantTarget;
    format: QuantFormat;
    symmetric: boolean;
    accuracyLevel: AccuracyLevel;
    /** At accuracy level 4: every MatMulNBits also multiplies its activations' int8 rounding residual (int8's CPU default). */
    activationResidual?: boolean;
    attention: AttentionForm;
    /** Bits of the quantized embedding and lm_head (default: the layers' own); int4 on the CPU keeps them at 8. */
    embeddingBits?: 4 | 8;
    batchSize?: number;
    onProgress?: (done: number, total: number, phase: 'calibrate' | 'write') => void;
    /** A rule of the target engine that llmopt worked around or could not meet, or a requantized GGUF source (one line). */
    onWarning?: (text: string) => void;
  };

export type TensorKind = 'attention' | 'mlp' | 'embedding' | 'lm_head' | 'norm' | 'rotary' | 'other';

export interface QuantizeReport {
  output: string;
  to: QuantTarget;
  method: QuantMethod;
  format: QuantFormat;
  bits: number | null;
  blockSize: number | null;
  symmetric: boolean | null;
  /** How MatMulNBits computes: float activations (levels 0-3), int8 (level 4), int8 with the residual; null without it. */
  activations: 'float' | 'int8' | 'int8+residual' | null;
  quantized: number;
  excluded: string[];
  bytes: Partial<Record<TensorKind, { before: number; after: number }>>;
  bytesBefore: number;
  bytesAfter: number;
  compression: number;
  calibrationTokens: number;
  gptq: { meanError: number; maxDampening: number } | null;
  /** --mix: the policy, the modules at 8 bits, and the linear weights' bits per weight under it (scales included). */
  mix: { policy: OnnxMixPlan['policy']; raised: string[]; bitsPerWeight: number } | null;
  /** Block ranges: min/max or searched (--clip search). */
  clip: ClipMode;
  /** AWQ: the mean exponent chosen over the scaled groups, how many were scaled, and the groups left unscaled. */
  awq: { meanAlpha: number; groups: number; skipped: string[] } | null;
  /** What the target engine's rules found and llmopt adjusted or could not (one line each). */
  warnings: string[];
  seconds: number;
}

export function kindOf(name: string): TensorKind {
  if (name.includes('.self_attn.')) return 'attention';
  if (name.includes('.mlp.')) return 'mlp';
  if (name.includes('embed_tokens')) return 'embedding';
  if (name.startsWith('lm_head')) return 'lm_head';
  if (name.includes('norm')) return 'norm';
  if (name === 'cos_cache' || name === 'sin_cache') return 'rotary';
  return 'other';
}

/** Option checks that need no file: each names the option (as a flag here, as a key in a recipe). */
export function validateQuantizeOptions(o: Omit<QuantizeOptions, 'accuracyLevel' | 'attention'> & { accuracyLevel: number }): void {
  const integer = o.to === 'int4' || o.to === 'int8';
  const fail = (key: string, render: (n: (key: string) => string) => string) => {
    throw new OptionError(key, render);
  };
  if (integer && !(BLOCK_SIZES as readonly number[]).includes(o.blockSize))
    fail('blockSize', (n) => `${n('blockSize')} ${o.blockSize}: choose one of ${BLOCK_SIZES.join(', ')}`);
  const calibrated = CALIBRATED_METHODS.includes(o.method);
  if (calibrated && !integer) fail('method', (n) => `${n('method')} ${o.method} works with ${n('to')} int4 or int8, not ${o.to}`);
  if (calibrated && !o.calib) fail('calib', (n) => `${n('method')} ${o.method} needs calibration text: give ${n('calib')} <file>`);
  if (o.clip === 'search' && !integer) fail('clip', (n) => `${n('clip')} search works with ${n('to')} int4 or int8, not ${o.to}`);
  if (o.format !== 'onnx' && !integer) fail('format', (n) => `${n('format')} ${o.format} writes int4 or int8 weights, not ${o.to}`);
  if (o.quantizeEmbeddings && !integer) fail('quantizeEmbeddings', (n) => `${n('quantizeEmbeddings')} needs ${n('to')} int4 or int8`);
  // The engines' weight-only schemes keep embeddings (and lm_head) in float: asking for them is refused, not ignored.
  if (o.quantizeEmbeddings && o.format !== 'onnx')
    fail('quantizeEmbeddings', (n) => `${n('quantizeEmbeddings')}: ${n('format')} ${o.format} keeps embeddings and lm_head in float`);
  if (o.format !== 'onnx' && integer) {
    const scheme = { format: o.format, bits: o.to === 'int4' ? 4 : 8, symmetric: o.symmetric, blockSize: o.blockSize } as const;
    const problem = hfSchemeProblem({ ...scheme, serveDtype: o.serveDtype ?? 'bfloat16' });
    if (problem) fail(problem.option, (n) => `${n(problem.option)} ${problem.option === 'to' ? o.to : o.blockSize}: ${problem.message}`);
  }
  if (![0, 1, 2, 3, 4].includes(o.accuracyLevel)) fail('accuracyLevel', (n) => `${n('accuracyLevel')} ${o.accuracyLevel}: choose 0 to 4`);
  // The residual corrects accuracy level 4's int8 activations: at levels 0-3 the activations are float already.
  if (o.activationResidual && (!integer || o.format !== 'onnx'))
    fail('activationResidual', (n) => `${n('activationResidual')} on: MatMulNBits' option (${n('to')} int4 or int8, ${n('format')} onnx)`);
  if (o.activationResidual && o.accuracyLevel !== 4)
    fail(
      'activationResidual',
      (n) => `${n('activationResidual')} on corrects int8 activations: it needs ${n('accuracyLevel')} 4, not ${o.accuracyLevel}`,
    );
  if (o.calib && !existsSync(o.calib)) throw new InputError(`${o.calib}: file not found`);
}

/** The calibration driver's progress as the pass reports it. */
const calibrating = (o: QuantizeOptions) => (done: number, total: number) => o.onProgress?.(done, total, 'calibrate');

/** GPTQ over every targeted layer, layer by layer on inputs through the already-quantized layers. */
async function gptqAll(
  model: HfModel,
  targets: LinearModule[],
  cfgOf: (module: string) => BlockQuantConfig,
  o: QuantizeOptions,
  set: CalibrationSet,
) {
  const results = new Map<string, BlockQuantized>();
  let errorSum = 0;
  let maxDampening = 0;
  const method: LayerwiseMethod = {
    statistic: 'hessian',
    compress: (t, w, inputs) => {
      const cfg = cfgOf(t.module);
      const run = { ...cfg, actOrder: o.actOrder, dampening: o.dampening };
      const choose = clipChooser(o.clip ?? 'minmax', cfg, hessianDiagonal(inputs.hessian!, t.cols));
      const r = gptqQuantize(w, t.rows, t.cols, inputs.hessian!, inputs.tokens, run, choose);
      results.set(t.module, r.quantized);
      errorSum += r.error;
      maxDampening = Math.max(maxDampening, r.dampeningUsed);
      return dequantize(r.quantized);
    },
  };
  const { tokens } = await calibrateLayerwise(model.spec, model.weights, set, targets, method, {
    batchSize: o.batchSize,
    onProgress: calibrating(o),
  });
  return { results, tokens, gptq: { meanError: errorSum / Math.max(1, results.size), maxDampening }, overrides: null, awq: null };
}

/** RTN with the clip search weighted by each input's activation energy, layer by layer on the calibration inputs. */
async function rtnClipAll(
  model: HfModel,
  targets: LinearModule[],
  cfgOf: (module: string) => BlockQuantConfig & QuantGrid,
  o: QuantizeOptions,
  set: CalibrationSet,
) {
  const results = new Map<string, BlockQuantized>();
  const method: LayerwiseMethod = {
    statistic: 'norms',
    compress: (t, w, inputs) => {
      const cfg = cfgOf(t.module);
      const q = quantizeRtn(w, t.rows, t.cols, cfg, clipChooser('search', cfg, inputs.norms));
      results.set(t.module, q);
      return dequantize(q);
    },
  };
  const { tokens } = await calibrateLayerwise(model.spec, model.weights, set, targets, method, {
    batchSize: o.batchSize,
    onProgress: calibrating(o),
  });
  return { results, tokens, gptq: null, overrides: null, awq: null };
}

/** AWQ over every targeted layer (awq.ts), then RTN or GPTQ (awq+gptq) on the scaled weights. */
async function awqAll(
  model: HfModel,
  targets: LinearModule[],
  cfg: BlockQuantConfig & QuantGrid,
  cfgOf: (module: string) => BlockQuantConfig & QuantGrid,
  o: QuantizeOptions,
  set: CalibrationSet,
) {
  const out = emptyAwqResult();
  const gptq = o.method === 'awq+gptq' ? { actOrder: o.actOrder, dampening: o.dampening } : null;
  const method = awqMethod(model.spec, model.weights, { cfg, cfgOf, clip: o.clip ?? 'minmax', gptq }, out);
  const { tokens } = await calibrateLayerwise(model.spec, model.weights, set, targets, method, {
    batchSize: o.batchSize,
    onProgress: calibrating(o),
  });
  return {
    results: out.quantized,
    tokens,
    gptq: gptq ? { meanError: out.gptqError / Math.max(1, out.quantized.size), maxDampening: out.maxDampening } : null,
    overrides: out.overrides,
    awq: awqSummary(out),
  };
}

export async function quantize(source: string, output: string, o: QuantizeOptions): Promise<QuantizeReport> {
  const started = performance.now();
  validateQuantizeOptions(o);
  if (findModelFile(source)) {
    throw new InputError(
      `${source}: an ONNX artifact; quantize reads Hugging Face folders ` +
        `(the output of prune, or the checkpoint the artifact was exported from)`,
    );
  }
  const mixPolicy = o.mix ?? 'none';
  const mixOptions = { ...o, mix: mixPolicy, asymmetric: !o.symmetric };
  validateMixOptions(mixOptions, new Set(o.targetBits === undefined ? [] : ['targetBits']));
  const model = await openHfModel(source);
  try {
    // A quantized GGUF file is read dequantized: requantizing it compounds both roundings, so it is allowed with a warning.
    const warnings: string[] = [];
    if (model.gguf && model.quantization) {
      warnings.push(`${model.gguf} holds ${model.quantization} weights; requantizing adds this rounding to theirs`);
    } else if (model.quantization) {
      throw new InputError(`${source}: already quantized (${model.quantization}); quantize the float checkpoint`);
    }
    if (model.gguf && o.format !== 'onnx') {
      throw new InputError(
        `${model.gguf}: --format ${o.format} is written from a Hugging Face folder, not a GGUF file (--format onnx reads GGUF)`,
      );
    }
    const { spec } = model;
    const selected = selectTargets(spec, o.exclude);
    if (selected.length === 0) throw new InputError('--exclude leaves no layer to quantize');
    const bits = o.to === 'int4' ? 4 : o.to === 'int8' ? 8 : null;
    const residual = Boolean(o.activationResidual);
    // The engines' rules, before any work: fused groups kept whole, shapes and kernels checked.
    const hfPlan =
      o.format === 'onnx'
        ? null
        : {
            format: o.format,
            bits: bits as 4 | 8,
            symmetric: o.symmetric,
            blockSize: o.blockSize,
            serveDtype: o.serveDtype ?? 'bfloat16',
            strict: o.strict ?? false,
            mixed: mixPolicy !== 'none',
          };
    const hf = hfPlan ? planHfTargets(spec, new Set(selected.map((t) => t.module)), hfPlan) : null;
    warnings.push(...(hf?.warnings ?? []));
    // A student trained through one rounding (distill --quantize-aware) keeps its gain only under that rounding.
    const trained = trainedScheme(source);
    const mismatch =
      trained &&
      qatMismatch(trained, {
        ...o,
        mix: mixPolicy,
        clip: o.clip ?? 'minmax',
        embeddingBits: o.quantizeEmbeddings && bits ? (o.embeddingBits ?? bits) : null,
      });
    if (mismatch) warnings.push(`${source}: ${mismatch}`);
    for (const w of warnings) o.onWarning?.(w);
    const targets = hf ? selected.filter((t) => hf.quantized.has(t.module)) : selected;
    if (targets.length === 0) throw new InputError('--exclude leaves no layer to quantize');
    const targetSet = new Set(targets.map((t) => t.module));
    const excluded = [
      ...new Set([
        ...selectTargets(spec, [])
          .map((t) => t.module)
          .filter((m) => !targetSet.has(m)),
      ]),
    ];
    // Each Hugging Face format quantizes as its own quantizer does (symmetric range, scale dtype); ONNX as MatMulNBits.
    const grid: QuantGrid = o.format === 'onnx' ? {} : gridOf(o.format, o.symmetric);
    const cfg: (BlockQuantConfig & QuantGrid) | null = bits
      ? { bits: bits as 4 | 8, blockSize: o.blockSize, symmetric: o.symmetric, ...grid }
      : null;
    // Read (and checked) once, before any work: an empty file is bad input whatever the method.
    const calibSet = o.calib ? loadModelCalibration(o.calib, source, spec, o.calibSamples, o.calibSeqLen) : null;

    // --mix: which modules take int8 (auto measures each target on the calibration windows first).
    const quantizeHead = o.to === 'fp16' || o.quantizeEmbeddings;
    // The embedding and lm_head may take their own bits (an 8-bit head beside 4-bit layers, as llama.cpp's Q4_K_M keeps
    // its output at 6 bits): most of the quality an int4 head costs, at a fraction of the model's bytes. A mix may raise it.
    const headCfg = cfg && o.embeddingBits ? { ...cfg, bits: o.embeddingBits } : cfg;
    const plan = await planOnnxMix({
      policy: cfg ? mixPolicy : 'none',
      targetBits: o.targetBits,
      low: cfg!,
      // fp16 and w8a8 have no blocks (cfg null) and no mix: the policy is 'none' then.
      high: cfg ? mixHighConfig(cfg, o.format) : cfg!,
      spec,
      targets,
      // A head already at 8 bits (the int4 CPU default) is not one a mix can raise.
      headQuantized: Boolean(cfg) && quantizeHead && headCfg!.bits < 8,
      weights: model.weights,
      calib: calibSet,
      fakeQuantize: (t, w, c) => dequantize(quantizeRtn(w, t.rows, t.cols, { ...c, ...grid })),
      onProgress: calibrating(o),
      // vLLM fuses q/k/v and gate/up into one kernel of one scheme: the engine formats raise them together.
      ...(hf ? { tie: hfMixTie(spec) } : {}),
    });
    if (hf && plan) {
      const mixWarnings = checkHfMix(spec, targetSet, plan.raised, plan.high, hfPlan!);
      warnings.push(...mixWarnings);
      for (const w of mixWarnings) o.onWarning?.(w);
    }
    const cfgOf = (module: string): BlockQuantConfig & QuantGrid => {
      const c = configOf(plan, module === LM_HEAD_MODULE ? headCfg! : cfg!, module);
      // The formats' grids follow each module's own symmetry (compressed-tensors' raised int8 is symmetric).
      return { ...c, ...(o.format === 'onnx' ? {} : gridOf(o.format, c.symmetric)) };
    };

    const clip = o.clip ?? 'minmax';
    const calibrated =
      o.method === 'gptq'
        ? await gptqAll(model, targets, cfgOf, o, calibSet!)
        : o.method === 'awq' || o.method === 'awq+gptq'
          ? await awqAll(model, targets, cfg!, cfgOf, o, calibSet!)
          : clip === 'search' && calibSet
            ? await rtnClipAll(model, targets, cfgOf, o, calibSet)
            : null;
    // Without calibration the clip search weighs every column alike.
    const quantizeLayer = (module: string, w: Float32Array, rows: number, cols: number): BlockQuantized =>
      calibrated?.results.get(module) ?? quantizeRtn(w, rows, cols, cfgOf(module), clipChooser(clip, cfgOf(module), null));
    const overrides = calibrated?.overrides ?? undefined;
    // Each quantized module's bits, as the manifest records them (inspect shows them from the artifact itself).
    const quantizedModules = [...targets.map((t) => t.module), ...(cfg && quantizeHead ? [LM_HEAD_MODULE] : [])];
    const tensorBits = cfg ? Object.fromEntries(quantizedModules.map((m) => [m, cfgOf(m).bits])) : null;
    const record: PassRecord = {
      pass: 'quantize',
      options: {
        to: o.to,
        method: o.method,
        bits,
        blockSize: cfg ? o.blockSize : null,
        symmetric: cfg ? o.symmetric : null,
        accuracyLevel: o.accuracyLevel,
        // Only when on, so the manifests of other artifacts stay as they were.
        ...(residual ? { activationResidual: true } : {}),
        quantizeEmbeddings: o.format === 'onnx' && o.quantizeEmbeddings,
        ...(o.embeddingBits && o.quantizeEmbeddings ? { embeddingBits: o.embeddingBits } : {}),
        excluded,
        format: o.format,
        actOrder: o.method.endsWith('gptq') ? Boolean(o.actOrder) : null,
        ...(clip === 'search' ? { clip } : {}),
        calibration: o.calib ? resolve(o.calib) : null,
        // Only with a mix, so the manifests of unmixed artifacts stay as they were.
        ...(plan
          ? {
              mix: plan.policy,
              targetBits: plan.policy === 'auto' ? o.targetBits : null,
              bitsPerWeight: (plan.bytes * 8) / plan.weights,
              tensorBits,
              sensitivity: plan.sensitivity,
            }
          : {}),
      },
      at: new Date().toISOString(),
    };

    const bytesBefore = new Map<TensorKind, number>();
    for (const [name, n] of model.storedBytes()) bytesBefore.set(kindOf(name), (bytesBefore.get(kindOf(name)) ?? 0) + n);
    let bytesAfter = new Map<TensorKind, number>();

    if (o.format !== 'onnx') {
      const layers = new Map<string, BlockQuantized>();
      for (const t of targets)
        layers.set(t.module, quantizeLayer(t.module, await model.weights.readFloat32(`${t.module}.weight`), t.rows, t.cols));
      const format = o.format;
      await writeModelFolder(output, { format: 'llmopt-checkpoint', source, passes: [record] }, (tmp) =>
        writeHfFormat(format, tmp, spec, source, model.checkpoint!, layers, excluded, overrides),
      );
      const written = await Checkpoint.open(output);
      for (const name of written.names()) bytesAfter.set(kindOf(name), (bytesAfter.get(kindOf(name)) ?? 0) + written.info(name).byteLength);
      await written.close();
    } else {
      // Targets take the new precision; lm_head too with --to fp16 or --quantize-embeddings; --exclude keeps float32.
      const quantizes = (module: string) => (module.startsWith('lm_head') ? quantizeHead : targetSet.has(module));
      const onlyTargets =
        (emitter: LinearEmitter): LinearEmitter =>
        (g, w, layer, x) =>
          (quantizes(layer.module) ? emitter : floatLinear)(g, w, layer, x);
      const linear =
        o.to === 'fp16'
          ? onlyTargets(fp16Linear)
          : o.to === 'w8a8'
            ? onlyTargets(w8a8Linear)
            : matMulNBitsLinear({
                accuracyLevel: o.accuracyLevel,
                residual,
                exclude: (module) => !quantizes(module),
                quantize: (layer, w) => quantizeLayer(layer.module, w, layer.outFeatures, layer.inFeatures),
              });
      const embedding =
        o.to === 'fp16'
          ? fp16Embedding
          : o.quantizeEmbeddings && cfg
            ? quantizedEmbedding(spec.tiedEmbeddings ? cfgOf(LM_HEAD_MODULE) : headCfg!, { accuracyLevel: o.accuracyLevel, residual })
            : undefined;
      await exportModel(source, output, {
        attention: o.attention,
        layout: 'llmopt',
        linear,
        embedding,
        precision: o.to,
        passes: [record],
        overrides,
        onProgress: (done, total) => o.onProgress?.(done, total, 'write'),
      });
      bytesAfter = new Map();
      for (const t of await readOnnxInitializers(join(output, 'model.onnx'))) {
        const kind = kindOf(t.name);
        bytesAfter.set(kind, (bytesAfter.get(kind) ?? 0) + t.byteLength);
      }
    }

    const kinds = new Set([...bytesBefore.keys(), ...bytesAfter.keys()]);
    const bytes: QuantizeReport['bytes'] = {};
    for (const k of kinds) bytes[k] = { before: bytesBefore.get(k) ?? 0, after: bytesAfter.get(k) ?? 0 };
    const totalBefore = [...bytesBefore.values()].reduce((a, b) => a + b, 0);
    const totalAfter = [...bytesAfter.values()].reduce((a, b) => a + b, 0);
    return {
      output,
      to: o.to,
      method: o.method,
      format: o.format,
      bits,
      blockSize: cfg ? o.blockSize : null,
      symmetric: cfg ? o.symmetric : null,
      activations: cfg && o.format === 'onnx' ? (o.accuracyLevel !== 4 ? 'float' : residual ? 'int8+residual' : 'int8') : null,
      quantized: o.to === 'fp16' ? 0 : targets.length,
      excluded,
      bytes,
      bytesBefore: totalBefore,
      bytesAfter: totalAfter,
      compression: totalBefore / totalAfter,
      calibrationTokens: calibrated?.tokens ?? 0,
      gptq: calibrated?.gptq ?? null,
      mix: plan ? { policy: plan.policy, raised: [...plan.raised], bitsPerWeight: (plan.bytes * 8) / plan.weights } : null,
      clip,
      awq: calibrated?.awq ?? null,
      warnings,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await model.close();
  }
}
