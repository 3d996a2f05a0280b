// quantize --mix: which tensors take a higher type than --to's. Named mixes (k-quant-m: the tensors llama.cpp's
// Q4_K_M raises, from formats/gguf/mix.ts's table; edges8: the first and last decoder layers and the lm_head) and
// auto: a byte budget (--target-bits) spent greedily where the measured KL (sensitivity.ts) drops most per byte.
import type { BlockQuantConfig } from '../../core/block-quant.js';
import { InputError } from '../../core/errors.js';
import type { DecoderSpec } from '../../core/spec.js';
import type { WeightSource } from '../../core/weights.js';
import { GGML_TYPES, type GgmlType } from '../../formats/gguf/ggml-types.js';
import { ggmlBitsPerWeight, kQuantMRaises, type GgufTarget, type GgufTensorShape } from '../../formats/gguf/mix.js';
import { OptionError } from '../options.js';
import type { CalibrationSet } from '../calibration.js';
import type { LinearKind, LinearModule } from '../targets.js';
import { blobSize, zeroPointBytesPerRow } from './matmul-nbits.js';
import { measureSensitivity, type Sensitivity } from './sensitivity.js';

export const MIX_POLICIES = ['none', 'k-quant-m', 'edges8', 'auto'] as const;
export type MixPolicy = (typeof MIX_POLICIES)[number];

/** The lm_head's module name in a mix (its weight `lm_head.weight`; the embedding's when tied). */
export const LM_HEAD_MODULE = 'lm_head';

/** Windows --mix auto measures on (the first ones of --calib): a few suffice to rank tensors. */
export const SENSITIVITY_WINDOWS = 16;

/** The GGUF name of each projection (llama.cpp's blk.N names), to read mix.ts's table for ONNX modules. */
const GGUF_NAME: Record<LinearKind, string> = {
  q: 'attn_q',
  k: 'attn_k',
  v: 'attn_v',
  o: 'attn_output',
  gate: 'ffn_gate',
  up: 'ffn_up',
  down: 'ffn_down',
};

/** GGUF targets' base (low) type, which a mix raises from. */
export function ggufBaseType(target: GgufTarget): GgmlType {
  return target.replace(/_m$/, '').toUpperCase() as GgmlType;
}

/** Bits per weight of a MatMulNBits type, scales (float32) and zero points included, for a whole number of blocks. */
export const nominalBitsPerWeight = (c: BlockQuantConfig) => c.bits + 32 / c.blockSize + (c.symmetric ? 0 : c.bits / c.blockSize);

/** Stored bytes of one [rows, cols] MatMulNBits weight: packed codes (ragged last block padded), scales, zero points. */
export function matMulNBitsBytes(rows: number, cols: number, c: BlockQuantConfig): number {
  const nb = Math.ceil(cols / c.blockSize);
  return rows * nb * blobSize(c.bits, c.blockSize) + rows * nb * 4 + (c.symmetric ? 0 : rows * zeroPointBytesPerRow(c.bits, nb));
}

/** What the option checks read (quantize's declared options, either format). */
export interface MixOptionValues {
  mix: MixPolicy;
  targetBits?: number;
  calib?: string;
  format: string;
  to: string;
  blockSize: number;
  asymmetric: boolean;
}

/**
 * The configuration a mix raises `low` to: int8 with the same blocks (MatMulNBits' widest; GPTQ's and compressed-tensors'
 * other width vLLM serves). compressed-tensors' int8 is symmetric whatever --asymmetric says: vLLM has no kernel for
 * 8-bit weights with zero points (its WNA16 scheme takes them at 4 bits only; compressed-tensors.ts).
 */
export function mixHighConfig<C extends BlockQuantConfig>(low: C, format: string): C {
  return { ...low, bits: 8, symmetric: format === 'compressed-tensors' ? true : low.symmetric };
}

/** The low and high configurations of a mix: --to int4's, and {@link mixHighConfig}'s int8. */
export function onnxMixConfigs(o: Pick<MixOptionValues, 'blockSize' | 'asymmetric'> & { format?: string }): {
  low: BlockQuantConfig;
  high: BlockQuantConfig;
} {
  const low: BlockQuantConfig = { bits: 4, blockSize: o.blockSize, symmetric: !o.asymmetric };
  return { low, high: mixHighConfig(low, o.format ?? 'onnx') };
}

/** Why AutoAWQ's checkpoints cannot hold a mix (the one sentence both refusals give). */
export const AWQ_MIX_REFUSAL =
  "AutoAWQ's quantization_config has one bits and group_size for every layer and only modules_to_not_convert for " +
  "float ones (vLLM's awq.py and awq_marlin.py read no per-module width); use --format compressed-tensors or gptq";

/** Option checks of --mix and --target-bits that need no file (each names its option). */
export function validateMixOptions(o: MixOptionValues, given: ReadonlySet<string>): void {
  const fail = (key: string, render: (n: (key: string) => string) => string): never => {
    throw new OptionError(key, render);
  };
  if (given.has('targetBits') && o.mix !== 'auto')
    fail('targetBits', (n) => `${n('targetBits')}: sets the budget of ${n('mix')} auto (add ${n('mix')} auto)`);
  if (o.mix === 'none') return;
  if (o.format === 'awq') fail('mix', (n) => `${n('mix')} ${o.mix}: ${n('format')} awq cannot mix widths: ${AWQ_MIX_REFUSAL}`);
  if (o.mix === 'auto' && !o.calib)
    fail('calib', (n) => `${n('mix')} auto measures each tensor on calibration text: give ${n('calib')} <file>`);
  if (o.mix === 'auto' && o.targetBits === undefined)
    fail('targetBits', (n) => `${n('mix')} auto needs a budget: give ${n('targetBits')} <bits per weight>`);
  let low: number;
  let high: number;
  if (o.format !== 'gguf') {
    if (o.to !== 'int4') {
      const widest = o.format === 'onnx' ? 'the widest MatMulNBits type llmopt writes' : `the widest type vLLM serves ${o.format} at`;
      const why = o.to === 'int8' ? `int8 is ${widest}: there is none above it to raise to` : 'mixes raise int4 weights to int8';
      fail('mix', (n) => `${n('mix')} ${o.mix} with ${n('to')} ${o.to}: ${why}`);
    }
    const c = onnxMixConfigs(o);
    [low, high] = [nominalBitsPerWeight(c.low), nominalBitsPerWeight(c.high)];
  } else {
    const base = ggufBaseType(o.to as GgufTarget);
    const raise = o.mix === 'k-quant-m' ? 'Q6_K' : 'Q8_0';
    if (!(base in GGML_TYPES) || GGML_TYPES[base].blockSize === 1 || ggmlBitsPerWeight(base) >= ggmlBitsPerWeight(raise))
      fail('mix', (n) => `${n('mix')} ${o.mix} raises tensors to ${raise}; ${n('to')} ${o.to} has no lower type to raise from`);
    [low, high] = [ggmlBitsPerWeight(base), ggmlBitsPerWeight(raise)];
  }
  const t = o.targetBits;
  if (t !== undefined && (t < low || t > high)) {
    fail(
      'targetBits',
      (n) => `${n('targetBits')} ${t}: ${n('to')} ${o.to} stores ${low} bits per weight and the raised type ${high}; choose between`,
    );
  }
}

/** One ONNX mix decision: the modules at the high type and the plan's bytes. */
export interface OnnxMixPlan {
  policy: MixPolicy;
  low: BlockQuantConfig;
  high: BlockQuantConfig;
  /** Modules (Hugging Face, without .weight; `lm_head`) at the high configuration. */
  raised: Set<string>;
  /** Stored bytes of the linear targets' weights under the plan (MatMulNBits B, scales, zero points). */
  bytes: number;
  /** Their elements: bytes * 8 / weights is the plan's bits per weight. */
  weights: number;
  /** --mix auto: each measured module's KL at the low and the high type. */
  sensitivity: Record<string, Sensitivity> | null;
}

/** The configuration a module is quantized with under a plan (no plan: `low`). */
export function configOf(plan: OnnxMixPlan | null, low: BlockQuantConfig, module: string): BlockQuantConfig {
  return plan?.raised.has(module) ? plan.high : low;
}

/** The modules a named mix raises: targets of its choice, and the lm_head when it is quantized. */
function namedRaised(policy: 'k-quant-m' | 'edges8', spec: DecoderSpec, targets: LinearModule[], headQuantized: boolean): Set<string> {
  const raised = new Set<string>();
  const last = spec.numLayers - 1;
  for (const t of targets) {
    const name = `blk.${t.layer}.${GGUF_NAME[t.kind]}.weight`;
    const shape = { name, layer: t.layer, nLayers: spec.numLayers, arch: 'llama', rows: t.rows };
    if (policy === 'edges8' ? t.layer === 0 || t.layer === last : kQuantMRaises(shape, !spec.tiedEmbeddings)) raised.add(t.module);
  }
  // Both raise the output (Q4_K_M gives it Q6_K): it only matters when --quantize-embeddings quantizes it.
  if (headQuantized) raised.add(LM_HEAD_MODULE);
  return raised;
}

function planBytes(targets: LinearModule[], raised: ReadonlySet<string>, low: BlockQuantConfig, high: BlockQuantConfig) {
  let bytes = 0;
  let weights = 0;
  for (const t of targets) {
    bytes += matMulNBitsBytes(t.rows, t.cols, raised.has(t.module) ? high : low);
    weights += t.rows * t.cols;
  }
  return { bytes, weights };
}

/**
 * The greedy spend: every module starts low; raising one costs its extra bytes and gains its KL drop. The
 * modules are raised in order of gain per extra byte while the budget allows (one that does not fit is
 * skipped and a cheaper one may still fit), and only where raising helps.
 */
export function spendBudget(items: Array<{ module: string; extraBytes: number; gain: number }>, budget: number): Set<string> {
  const order = items.filter((i) => i.gain > 0 && i.extraBytes > 0).sort((a, b) => b.gain / b.extraBytes - a.gain / a.extraBytes);
  const raised = new Set<string>();
  let left = budget;
  for (const i of order) {
    if (i.extraBytes > left) continue;
    raised.add(i.module);
    left -= i.extraBytes;
  }
  return raised;
}

export interface OnnxMixInputs {
  policy: MixPolicy;
  targetBits?: number;
  low: BlockQuantConfig;
  high: BlockQuantConfig;
  spec: DecoderSpec;
  targets: LinearModule[];
  /** Whether the lm_head is quantized (--quantize-embeddings): the named mixes raise it then. */
  headQuantized: boolean;
  /** --mix auto: the float weights, the calibration windows and the quantizer's dequantized output at a config. */
  weights?: WeightSource;
  calib?: CalibrationSet | null;
  fakeQuantize?: (t: LinearModule, w: Float32Array, c: BlockQuantConfig) => Float32Array;
  onProgress?: (done: number, total: number) => void;
  /**
   * Modules that must share a width (the shards vLLM fuses into one Linear: q/k/v, gate/up) map to one key: a named
   * mix that raises one raises all of them, and auto spends on them together (their extra bytes and KL gains summed).
   */
  tie?: (module: string) => string;
}

/**
 * The ONNX plan of a mix over the linear targets; throws InputError for a mix that names no tensor and for a
 * --target-bits this model cannot meet (ragged rows pad their last block, so its smallest may exceed the nominal).
 */
export async function planOnnxMix(i: OnnxMixInputs): Promise<OnnxMixPlan | null> {
  if (i.policy === 'none') return null;
  const { low, high, targets } = i;
  let raised: Set<string>;
  let sensitivity: Record<string, Sensitivity> | null = null;
  if (i.policy === 'auto') {
    const floor = planBytes(targets, new Set(), low, high);
    const budget = Math.floor((i.targetBits! * floor.weights) / 8);
    if (budget < floor.bytes) {
      const least = ((floor.bytes * 8) / floor.weights).toFixed(4);
      throw new InputError(`--target-bits ${i.targetBits}: below this model's int4 size (${least} bits per weight with its padded blocks)`);
    }
    const measured = await measureSensitivity(i.spec, i.weights!, i.calib!, targets, {
      windows: SENSITIVITY_WINDOWS,
      fakeQuantize: (c, w, level) => i.fakeQuantize!(c as LinearModule, w, level === 'low' ? low : high),
      onProgress: i.onProgress,
    });
    sensitivity = Object.fromEntries(measured);
    const key = i.tie ?? ((m: string) => m);
    const items = new Map<string, { module: string; extraBytes: number; gain: number }>();
    for (const t of targets) {
      const item = items.get(key(t.module)) ?? { module: key(t.module), extraBytes: 0, gain: 0 };
      item.extraBytes += matMulNBitsBytes(t.rows, t.cols, high) - matMulNBitsBytes(t.rows, t.cols, low);
      item.gain += measured.get(t.module)!.low - measured.get(t.module)!.high;
      items.set(item.module, item);
    }
    const keys = spendBudget([...items.values()], budget - floor.bytes);
    raised = new Set(targets.filter((t) => keys.has(key(t.module))).map((t) => t.module));
  } else {
    raised = namedRaised(i.policy, i.spec, targets, i.headQuantized);
    if (raised.size === 0)
      throw new InputError(`--mix ${i.policy}: names no tensor that is quantized here (--exclude keeps all of its tensors float)`);
    if (i.tie) {
      const keys = new Set([...raised].map(i.tie));
      for (const t of targets) if (keys.has(i.tie(t.module))) raised.add(t.module);
    }
  }
  return { policy: i.policy, low, high, raised, ...planBytes(targets, raised, low, high), sensitivity };
}

/**
 * The GGUF type a named mix gives a tensor whose type is `current` (llama.cpp's choice for the target), or
 * `current` when the mix leaves it: edges8 raises the quantized matrices of the first and last blocks and the
 * output (token_embd when tied) to Q8_0; k-quant-m raises what Q4_K_M raises to Q6_K, or to llama.cpp's
 * fallback Q8_0 where a row does not fit 256. A tensor is never lowered (an F16 fallback stays F16).
 */
export function ggufMixType(policy: 'k-quant-m' | 'edges8', t: GgufTensorShape, hasOutput: boolean, current: GgmlType): GgmlType {
  if (GGML_TYPES[current].blockSize === 1) return current; // F32 (not quantized), F16 fallback, excluded
  const head = t.name === 'output.weight' || (!hasOutput && t.name === 'token_embd.weight');
  let wanted: GgmlType | null = null;
  if (policy === 'edges8') {
    if (head || t.layer === 0 || t.layer === t.nLayers - 1) wanted = 'Q8_0';
  } else if (kQuantMRaises(t, hasOutput)) {
    wanted = t.cols % GGML_TYPES.Q6_K.blockSize === 0 ? 'Q6_K' : 'Q8_0';
  }
  if (wanted === null || t.cols % GGML_TYPES[wanted].blockSize !== 0) return current;
  return ggmlBitsPerWeight(wanted) > ggmlBitsPerWeight(current) ? wanted : current;
}
