// quantize --format gguf: a Hugging Face model into one llama.cpp file of a GGUF target (q8_0, q4_0, ..., q4_k_m),
// each tensor's type as llama-quantize chooses it (formats/gguf/mix.ts), round-to-nearest with llama.cpp's scale
// choice (formats/gguf/quants) or GPTQ codes in the same block layouts (gguf-gptq.ts), each block's scale searched
// with --clip search (llama.cpp's importance-weighted searches; Q8_0 a grid of fp16 scales); written tensor by tensor.
import { existsSync } from 'node:fs';
import { InputError } from '../../core/errors.js';
import type { DecoderSpec } from '../../core/spec.js';
import { ggufRowOrder } from '../../formats/gguf/architectures.js';
import { GGML_TYPES, type GgmlType, tensorBytes } from '../../formats/gguf/ggml-types.js';
import { GGUF_TARGETS, ggufFileType, ggufTensorDecision, type GgufTarget } from '../../formats/gguf/mix.js';
import { importanceFromSums, type ImatrixEntry } from '../../formats/gguf/quants/imatrix.js';
import { dequantizeRows, quantizeRows } from '../../formats/gguf/quants/index.js';
import { quantizeRowsParallel } from '../../formats/gguf/quants/parallel.js';
import { calibrateLayerwise, loadModelCalibration, type LayerwiseMethod } from '../calibration.js';
import { writeGgufModel, type GgufTensorSlot, type GgufWriteReport } from '../export/gguf.js';
import { OptionError } from '../options.js';
import { globMatcher, linearModules, type LinearModule } from '../targets.js';
import { gptqQuantizeGguf } from './gguf-gptq.js';
import { ggufMixType } from './mix-policy.js';
import { planGgufAuto, type GgufAutoPlan } from './gguf-mix-auto.js';
import { awqMethod, awqSummary, emptyAwqResult } from './awq.js';
import type { ClipMode } from './clip.js';
import { quantizeFlags, trainedScheme } from './qat.js';

export { GGUF_TARGETS, type GgufTarget };

export interface GgufQuantizeOptions {
  to: GgufTarget;
  /** Hugging Face module globs kept in float32 (`*down_proj`, `lm_head`, `model.embed_tokens`). */
  exclude: readonly string[];
  /** token_embd and output in the target's own type instead of llama.cpp's defaults for them. */
  quantizeEmbeddings: boolean;
  /**
   * A tensor whose rows do not fit its type takes llama.cpp's fallback (a K-quant's Q5_0/Q5_1/Q8_0, then F16) or,
   * for a type llama.cpp gives none (the 32-blocks and Q8_0), F16; false: refuse any fallback.
   */
  fallback: boolean;
  method: 'rtn' | 'gptq' | 'awq' | 'awq+gptq';
  /**
   * search: every block scale searched. rtn / awq: llama.cpp's importance-weighted `_impl` search (what llama-quantize
   * --imatrix runs), importance the mean x^2 of each linear module's input over --calib's tokens (1 per column without
   * --calib, and for token_embd / output), Q8_0 by a grid of fp16 scales (searchQ8Block); gptq / awq+gptq (whose 32- and
   * 256-blocks already take the weighted search): that grid for Q8_0 blocks, and the searches for the tensors GPTQ does
   * not round. Default minmax: llama.cpp's round-to-nearest choice (or GPTQ's).
   */
  clip?: ClipMode;
  /** --clip search with --calib (rtn, awq): each tensor's calibrated importance as llama-imatrix would record it. */
  onImportance?: (entry: ImatrixEntry) => void;
  /**
   * AWQ: the folded float model's changed tensors by Hugging Face name (each scaled weight before its rounding, the
   * folded norms and biases), the model llama-quantize would be given. Holds every scaled matrix: for checks only.
   */
  onAwqFloat?: (tensors: Map<string, Float32Array>) => void;
  /** --mix: tensors raised above llama.cpp's choice for the target (mix-policy.ts); 'none' or absent: its choice. */
  mix?: 'none' | 'k-quant-m' | 'edges8' | 'auto';
  /** --mix auto: bits per weight over the linear tensors it may raise, scales included. */
  targetBits?: number;
  /** GPTQ: calibration text (one document per line), windows and their length, Hessian dampening, act order. */
  calib?: string;
  calibSamples?: number;
  calibSeqLen?: number;
  dampening?: number;
  actOrder?: boolean;
  /** Threads that encode the tensors (quantizeRowsParallel; default: all cores). */
  threads?: number;
  onProgress?: (done: number, total: number, phase?: 'calibrate' | 'write') => void;
  onWarning?: (text: string) => void;
}

export interface GgufQuantizeReport extends GgufWriteReport {
  format: 'gguf';
  to: GgufTarget;
  method: 'rtn' | 'gptq' | 'awq' | 'awq+gptq';
  clip: ClipMode;
  /** --clip search: tensors searched with calibrated importance, and with unit importance (or Q8_0's grid unweighted). */
  searched: { calibrated: number; unit: number } | null;
  /** AWQ: groups scaled and the mean exponent chosen. */
  awq: { groups: number; meanAlpha: number; skipped: string[] } | null;
  /** GPTQ: calibration tokens, and the layers quantized with it (the others round to nearest). */
  calibrationTokens: number;
  gptqLayers: number;
  /** Tensors that did not get the type llama.cpp wanted for them, and what they got instead. */
  fallbacks: string[];
  /** Tensors kept in float32 by --exclude. */
  excluded: string[];
  /** --mix: the policy and each tensor it raised, as "name: from -> to". */
  mix: { policy: 'k-quant-m' | 'edges8' | 'auto'; raised: string[]; bitsPerWeight?: number } | null;
  /** What the written file may not be as the source meant (a student trained for another rounding). */
  warnings: string[];
}

/** Checks of the GGUF options that need no file (the definition's validate calls it for --format gguf). */
export function validateGgufQuantizeOptions(
  o: { to: string; method: string; calib?: string; clip?: string },
  given: ReadonlySet<string>,
): void {
  if (!(GGUF_TARGETS as readonly string[]).includes(o.to)) {
    throw new OptionError('to', (n) => `${n('to')} ${o.to}: ${n('format')} gguf writes ${GGUF_TARGETS.join(', ')}`);
  }
  for (const key of ['blockSize', 'asymmetric', 'symmetric', 'accuracyLevel', 'activationResidual', 'attention'] as const) {
    if (given.has(key)) {
      throw new OptionError(key, (n) => `${n(key)}: not a GGUF option (llama.cpp's types fix their blocks; ${n('to')} picks one)`);
    }
  }
  if (o.method !== 'rtn' && (o.to === 'f32' || o.to === 'f16' || o.to === 'bf16')) {
    throw new OptionError('method', (n) => `${n('method')} ${o.method}: ${n('to')} ${o.to} has no quantization grid to calibrate`);
  }
  if (o.clip === 'search' && (o.to === 'f32' || o.to === 'f16' || o.to === 'bf16'))
    throw new OptionError('clip', (n) => `${n('clip')} search: ${n('to')} ${o.to} has no quantization grid to search`);
  if (o.method !== 'rtn' && !o.calib)
    throw new OptionError('calib', (n) => `${n('method')} ${o.method} needs calibration text: give ${n('calib')} <file>`);
  if (o.calib && !existsSync(o.calib)) throw new InputError(`${o.calib}: file not found`);
}

const isBlockType = (t: GgmlType) => t !== 'F32' && t !== 'F16' && t !== 'BF16';

/** The block type of each decoder linear module (by Hugging Face module name) stored in one. */
function blockTypes(slots: ReadonlyArray<GgufTensorSlot & { type: GgmlType }>): Map<string, GgmlType> {
  const typeOf = new Map<string, GgmlType>();
  for (const s of slots) {
    if (s.shape.length !== 2 || s.layer === null || !isBlockType(s.type)) continue;
    for (const n of s.hf) if (n.endsWith('.weight')) typeOf.set(n.slice(0, -'.weight'.length), s.type);
  }
  return typeOf;
}

/** What the calibrated drivers start from: each block-typed module's type, those modules, the calibration windows, progress. */
function calibrationPlan(
  source: string,
  o: GgufQuantizeOptions,
  spec: DecoderSpec,
  slots: ReadonlyArray<GgufTensorSlot & { type: GgmlType }>,
) {
  const typeOf = blockTypes(slots);
  const targets = linearModules(spec).filter((t) => typeOf.has(t.module));
  const set = loadModelCalibration(o.calib!, source, spec, o.calibSamples, o.calibSeqLen);
  const onProgress = (done: number, total: number) => o.onProgress?.(done, total, 'calibrate');
  return { typeOf, targets, set, codes: new Map<string, Uint8Array>(), onProgress };
}

/** Each module weight's calibrated importance: its input's summed squares (float32, as llama-imatrix stores them) and tokens. */
type ImportanceSums = Map<string, { sums: Float32Array; tokens: number }>;

/**
 * --clip search --calib with rtn: each block-typed linear module's input statistics on the dense model (llama-imatrix
 * runs the float model too), by Hugging Face weight name; the weights are left as they are.
 */
async function importanceLayers(
  source: string,
  o: GgufQuantizeOptions,
  spec: DecoderSpec,
  weights: Parameters<typeof calibrateLayerwise>[1],
  slots: ReadonlyArray<GgufTensorSlot & { type: GgmlType }>,
  sums: ImportanceSums,
) {
  const { targets, set, onProgress } = calibrationPlan(source, o, spec, slots);
  const method: LayerwiseMethod = {
    statistic: 'norms',
    compress: (t, w, inputs) => {
      sums.set(`${t.module}.weight`, { sums: Float32Array.from(inputs.norms!), tokens: inputs.tokens });
      return w;
    },
  };
  return calibrateLayerwise(spec, weights, set, targets, method, { onProgress, sequential: false });
}

/** GPTQ over the decoder's linear layers in their GGUF types; codes kept by Hugging Face module for the encoder. */
async function gptqLayers(
  source: string,
  o: GgufQuantizeOptions,
  spec: DecoderSpec,
  weights: Parameters<typeof calibrateLayerwise>[1],
  slots: ReadonlyArray<GgufTensorSlot & { type: GgmlType }>,
) {
  const { typeOf, targets, set, codes, onProgress } = calibrationPlan(source, o, spec, slots);
  const method: LayerwiseMethod = {
    statistic: 'hessian',
    compress: (t, w, inputs) => {
      const type = typeOf.get(t.module)!;
      const bytes = gptqQuantizeGguf(type, w, t.rows, t.cols, inputs.hessian!, inputs.tokens, {
        dampening: o.dampening,
        actOrder: o.actOrder,
        searchQ8: o.clip === 'search',
      });
      codes.set(`${t.module}.weight`, bytes);
      return dequantizeRows(type, bytes, t.rows, t.cols);
    },
  };
  const { tokens } = await calibrateLayerwise(spec, weights, set, targets, method, { onProgress });
  return { codes, tokens };
}

/**
 * AWQ before llama.cpp's rounding: the scales are searched on a 4-bit grid of 32-blocks (symmetric for Q4_0/Q5_0/Q8_0,
 * with a minimum for the others: a stand-in for each type's own grid), folded, then each scaled weight is rounded in its
 * GGUF type (llama.cpp's way, or GPTQ on the scaled inputs' Hessian); the folded norms and biases go to the writer.
 */
async function awqLayers(
  source: string,
  o: GgufQuantizeOptions,
  spec: DecoderSpec,
  weights: Parameters<typeof calibrateLayerwise>[1],
  slots: ReadonlyArray<GgufTensorSlot & { type: GgmlType }>,
  overrides: Map<string, Float32Array>,
  sums: ImportanceSums,
) {
  const { typeOf, targets, set, codes, onProgress } = calibrationPlan(source, o, spec, slots);
  const search = o.clip === 'search';
  const symmetric = ['q4_0', 'q5_0', 'q8_0'].includes(o.to);
  const out = emptyAwqResult();
  const folded = new Map<string, Float32Array>();
  const rounder = (t: LinearModule, w: Float32Array, H: Float64Array, tokens: number): Float32Array => {
    const type = typeOf.get(t.module)!;
    if (o.onAwqFloat) folded.set(`${t.module}.weight`, w.slice());
    let bytes: Uint8Array;
    if (o.method === 'awq+gptq') {
      bytes = gptqQuantizeGguf(type, w, t.rows, t.cols, H, tokens, { dampening: o.dampening, actOrder: o.actOrder, searchQ8: search });
    } else if (search) {
      // The scaled inputs' energies (H is their Gram matrix), as llama-imatrix would measure them on the folded model.
      const s = Float32Array.from({ length: t.cols }, (_, j) => H[j * t.cols + j]!);
      sums.set(`${t.module}.weight`, { sums: s, tokens });
      bytes = quantizeRows(type, w, t.rows, t.cols, { importance: importanceFromSums(s, tokens), searchQ8: true });
    } else {
      bytes = quantizeRows(type, w, t.rows, t.cols);
    }
    codes.set(`${t.module}.weight`, bytes);
    return dequantizeRows(type, bytes, t.rows, t.cols);
  };
  const method = awqMethod(spec, weights, { cfg: { bits: 4, blockSize: 32, symmetric }, clip: 'minmax', gptq: null, rounder }, out);
  const { tokens } = await calibrateLayerwise(spec, weights, set, targets, method, { onProgress });
  for (const [name, t] of out.overrides) overrides.set(name, t);
  if (o.onAwqFloat) o.onAwqFloat(new Map([...out.overrides, ...folded]));
  return { codes, tokens, awq: awqSummary(out) };
}

/**
 * --clip search with GPTQ changes only Q8_0 blocks' scales and the tensors GPTQ does not round (token_embd, output):
 * refused, before any calibration, where the file has neither (the option would do nothing).
 */
function refuseIdleSearch(o: GgufQuantizeOptions, slots: ReadonlyArray<GgufTensorSlot & { type: GgmlType }>): void {
  const changes = slots.some((s) => isBlockType(s.type) && (s.type === 'Q8_0' || s.layer === null || s.shape.length !== 2));
  if (changes) return;
  throw new InputError(
    `--clip search: with --method ${o.method} every quantized tensor of this --to ${o.to} file is GPTQ-rounded on llama.cpp's ` +
      'importance-weighted scales already (no Q8_0 block, none outside GPTQ): nothing to search',
  );
}

/** A GGUF tensor's bytes from its parts' GPTQ codes: rows stacked, then moved as the layout moves them. */
function assembleCodes(spec: DecoderSpec, slot: GgufTensorSlot, parts: Uint8Array[], type: GgmlType): Uint8Array {
  const all = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  const order = slot.entry ? ggufRowOrder(spec, slot.entry) : null;
  if (!order) return all;
  const rowBytes = tensorBytes(type, slot.shape.at(-1)!);
  const out = new Uint8Array(all.length);
  for (let r = 0; r < order.length; r++) out.set(all.subarray(order[r]! * rowBytes, (order[r]! + 1) * rowBytes), r * rowBytes);
  return out;
}

/** The Hugging Face module (without .weight/.bias) of each part of a slot. */
const modulesOf = (slot: GgufTensorSlot) => slot.hf.map((n) => n.replace(/\.(weight|bias)$/, ''));

/** Writes `source` as a GGUF file of `o.to`; refuses, before writing, a fallback the user refused. */
export async function quantizeGguf(source: string, output: string, o: GgufQuantizeOptions): Promise<GgufQuantizeReport> {
  // A student trained through llmopt's own int4/int8 rounding (distill --quantize-aware) is rounded again on this grid.
  const trained = trainedScheme(source);
  const warnings = trained
    ? [
        `${source}: trained quantization-aware for \`quantize ${quantizeFlags(trained)}\`; GGUF ${o.to} rounds it on ` +
          "llama.cpp's grid instead, which undoes part of what the training won back",
      ]
    : [];
  for (const w of warnings) o.onWarning?.(w);
  const excludedBy = globMatcher(o.exclude);
  const fallbacks: string[] = [];
  const excluded: string[] = [];
  const policy = o.mix && o.mix !== 'none' ? o.mix : null;
  // q4_k_m and q5_k_m are llama.cpp's k-quant mixes already: --mix k-quant-m leaves them as llama-quantize writes them.
  const mix = policy === 'k-quant-m' && (o.to === 'q4_k_m' || o.to === 'q5_k_m') ? null : policy;
  const raised: string[] = [];
  let auto: GgufAutoPlan | null = null;
  const search = o.clip === 'search';
  // Calibrated importance for llama.cpp's own searches: its type table then follows llama-quantize --imatrix's.
  const calibratedSearch = search && o.calib !== undefined && (o.method === 'rtn' || o.method === 'awq');
  const sums: ImportanceSums = new Map();
  const searched = { calibrated: 0, unit: 0 };
  let importanceTokens = 0;
  // `log`: false while --mix auto plans (llama.cpp's type only, nothing recorded).
  const decide = (slot: GgufTensorSlot, spec: DecoderSpec, archName: string, log = true): GgmlType => {
    const modules = modulesOf(slot);
    const hit = modules.filter((m) => excludedBy(m));
    if (hit.length > 0 && hit.length < modules.length) {
      throw new InputError(
        `--exclude: ${hit.join(', ')} is stored with ${modules.filter((m) => !hit.includes(m)).join(', ')} ` +
          `in GGUF tensor "${slot.name}"; ` +
          'exclude all of them or none',
      );
    }
    if (hit.length > 0 && slot.shape.length === 2) {
      if (log) excluded.push(slot.name);
      return 'F32';
    }
    const [rows, cols] = slot.shape.length === 2 ? slot.shape : [1, slot.shape[0]!];
    const shape = { name: slot.name, layer: slot.layer, nLayers: spec.numLayers, rows: rows!, cols: cols!, arch: archName };
    const hasOutput = !spec.tiedEmbeddings;
    try {
      const d = ggufTensorDecision(o.to, shape, { quantizeEmbeddings: o.quantizeEmbeddings, hasOutput, importance: calibratedSearch });
      if (d.type !== d.wanted) {
        if (!o.fallback) throw new InputError(`GGUF ${o.to}: ${d.reason}; --no-fallback refuses it, so nothing is written`);
        if (log) fallbacks.push(`${slot.name}: ${d.wanted} -> ${d.type}`);
      }
      if (!log) return d.type;
      let type = d.type;
      if (auto) type = auto.raised.has(slot.name) ? 'Q8_0' : d.type;
      else if (mix && mix !== 'auto') type = ggufMixType(mix, shape, hasOutput, d.type);
      if (type !== d.type) raised.push(`${slot.name}: ${d.type} -> ${type}`);
      return type;
    } catch (e) {
      // A type llama.cpp gives no fallback (llama-quantize refuses the file): F16 keeps the tensor exact enough.
      if (!(e instanceof InputError) || !o.fallback || /--no-fallback/.test(e.message)) throw e;
      const wanted = o.to.toUpperCase();
      if (log) fallbacks.push(`${slot.name}: ${wanted} -> F16 (rows of ${cols} are not whole blocks; llama.cpp has no fallback)`);
      return 'F16';
    }
  };
  if (mix === 'auto') auto = await planGgufAuto(source, { ...o, targetBits: o.targetBits!, calib: o.calib! }, decide);
  let gptq: { codes: Map<string, Uint8Array>; tokens: number; spec: DecoderSpec; awq?: GgufQuantizeReport['awq'] } | null = null;
  const overrides = new Map<string, Float32Array>();
  const report = await writeGgufModel(source, output, {
    fileType: ggufFileType(o.to),
    typeOf: (slot, spec, arch) => decide(slot, spec, arch.gguf),
    prepare: async (spec, weights, slots) => {
      // Every type is chosen and nothing written yet: a mix that raised nothing is refused here.
      if (mix && mix !== 'auto' && raised.length === 0)
        throw new InputError(`--mix ${mix}: names no tensor that --to ${o.to} quantizes below its type here (excluded or fallen back)`);
      if (search && (o.method === 'gptq' || o.method === 'awq+gptq')) refuseIdleSearch(o, slots);
      if (o.method === 'gptq') gptq = { ...(await gptqLayers(source, o, spec, weights, slots)), spec };
      else if (o.method !== 'rtn') gptq = { ...(await awqLayers(source, o, spec, weights, slots, overrides, sums)), spec };
      else if (calibratedSearch) importanceTokens = (await importanceLayers(source, o, spec, weights, slots, sums)).tokens;
      if (o.onImportance) {
        for (const slot of slots) {
          const entry = sums.get(slot.hf[0]!);
          if (entry && isBlockType(slot.type)) o.onImportance({ name: slot.name, sums: entry.sums, tokens: entry.tokens });
        }
      }
    },
    overrides,
    encode: (slot, data, type) => {
      const cols = slot.shape.at(-1)!;
      if (cols % GGML_TYPES[type].blockSize !== 0) throw new Error(`GGUF: ${slot.name} cannot be ${type}`);
      const parts = gptq ? slot.hf.map((n) => gptq!.codes.get(n)) : [];
      const coded = gptq && parts.length > 0 && parts.every((p) => p !== undefined);
      if (search && isBlockType(type)) {
        const weighted = sums.has(slot.hf[0]!) || (coded && type === 'Q8_0');
        if (weighted) searched.calibrated++;
        else if (!coded) searched.unit++;
      }
      if (coded) return assembleCodes(gptq!.spec, slot, parts as Uint8Array[], type);
      if (!search || !isBlockType(type)) return quantizeRowsParallel(type, data, data.length / cols, cols, {}, o.threads);
      const entry = sums.get(slot.hf[0]!);
      const importance = entry ? importanceFromSums(entry.sums, entry.tokens) : new Float32Array(cols).fill(1);
      return quantizeRowsParallel(type, data, data.length / cols, cols, { importance, searchQ8: true }, o.threads);
    },
    onProgress: (done, total) => o.onProgress?.(done, total, 'write'),
  });
  const g = gptq as { codes: Map<string, Uint8Array>; tokens: number; awq?: GgufQuantizeReport['awq'] } | null;
  return {
    ...report,
    format: 'gguf',
    to: o.to,
    method: o.method,
    clip: o.clip ?? 'minmax',
    searched: search ? searched : null,
    awq: g?.awq ?? null,
    calibrationTokens: g?.tokens ?? importanceTokens,
    gptqLayers: g?.codes.size ?? 0,
    fallbacks,
    excluded,
    mix: policy ? { policy, raised, ...(auto ? { bitsPerWeight: auto.bitsPerWeight } : {}) } : null,
    warnings,
  };
}
