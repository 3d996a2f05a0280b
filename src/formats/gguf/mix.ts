// Which ggml type each tensor of a GGUF gets for a target file type: llama.cpp's choice (src/llama-quant.cpp,
// llama_tensor_get_type and tensor_type_fallback) for the targets llmopt writes, with the reason stated.
import { InputError } from '../../core/errors.js';
import { GGML_TYPES, type GgmlType } from './ggml-types.js';

/** The GGUF file types llmopt writes (llama-quantize's names, lower case). */
export const GGUF_TARGETS = [
  'f32',
  'f16',
  'bf16',
  'q8_0',
  'q4_0',
  'q4_1',
  'q5_0',
  'q5_1',
  'q4_k',
  'q5_k',
  'q6_k',
  'q4_k_m',
  'q5_k_m',
] as const;
export type GgufTarget = (typeof GGUF_TARGETS)[number];

/**
 * Each target's default tensor type and whether llama.cpp's per-tensor mix applies. `q4_k` / `q5_k` are
 * llama-quantize's `--pure` Q4_K / Q5_K (every quantizable tensor the one type, then the shape fallback);
 * `q6_k`, `q8_0`, the legacy types and the `_m` mixes are llama-quantize's file types of those names.
 */
const TARGETS: Record<GgufTarget, { type: GgmlType; pure: boolean; ftype: number }> = {
  f32: { type: 'F32', pure: false, ftype: 0 },
  f16: { type: 'F16', pure: false, ftype: 1 },
  bf16: { type: 'BF16', pure: false, ftype: 32 },
  q8_0: { type: 'Q8_0', pure: false, ftype: 7 },
  q4_0: { type: 'Q4_0', pure: false, ftype: 2 },
  q4_1: { type: 'Q4_1', pure: false, ftype: 3 },
  q5_0: { type: 'Q5_0', pure: false, ftype: 8 },
  q5_1: { type: 'Q5_1', pure: false, ftype: 9 },
  q4_k: { type: 'Q4_K', pure: true, ftype: 15 },
  q5_k: { type: 'Q5_K', pure: true, ftype: 17 },
  q6_k: { type: 'Q6_K', pure: false, ftype: 18 },
  q4_k_m: { type: 'Q4_K', pure: false, ftype: 15 },
  q5_k_m: { type: 'Q5_K', pure: false, ftype: 17 },
};

/** llama.cpp's `general.file_type` (llama_ftype) for a target. */
export function ggufFileType(target: GgufTarget): number {
  return TARGETS[target].ftype;
}

/** The tensor a type is chosen for. */
export interface GgufTensorShape {
  /** GGUF name, e.g. blk.3.ffn_down.weight, token_embd.weight, output.weight. */
  name: string;
  /** The block index of a blk.N tensor, null for the others. */
  layer: number | null;
  nLayers: number;
  /** The product of the outer dimensions (GGUF ne[1] for a matrix, 1 for a vector). */
  rows: number;
  /** Row length (GGUF ne[0]): what the block size must divide. */
  cols: number;
  /** `general.architecture`. */
  arch: string;
}

export interface GgufMixOptions {
  /**
   * Give token_embd.weight and output.weight the target's own type (llama-quantize's --token-embedding-type
   * and --output-tensor-type set to it) instead of llama.cpp's defaults for them (output Q6_K, or Q8_0
   * where a row does not fit 256; token_embd the target type, or the output's type when tied).
   */
  quantizeEmbeddings?: boolean;
  /** An importance matrix is used: llama.cpp then gives Q4_0 / Q5_0 files' first ffn_down layers Q4_1 / Q5_1. */
  importance?: boolean;
  /**
   * Whether the model has an output.weight (default true); without one (tied embeddings) token_embd is
   * the output too and takes its type. {@link ggufMix} reads it from the tensor names.
   */
  hasOutput?: boolean;
}

/** A type choice and why, so a refusal or a report can say what llama.cpp would do. */
export interface GgufTensorDecision {
  type: GgmlType;
  /** The type before the shape fallback (equal to `type` when the row fits). */
  wanted: GgmlType;
  /** One line: why this type, e.g. "use_more_bits layer: Q6_K" or the fallback taken. */
  reason: string;
}

/** Name patterns llama.cpp never quantizes (tensor_allows_quantization), besides 1-D tensors. */
const NEVER_QUANTIZED = [
  '_norm.weight',
  'ffn_gate_inp.weight',
  'ffn_gate_tid2eid.weight',
  'altup',
  'laurel',
  'per_layer_model_proj',
  'ssm_conv1d',
  'shortconv.conv.weight',
  'indexer.k_proj.weight',
  'indexer.q_proj.weight',
  'time_mix_first.weight',
  'time_mix_w0.weight',
  'time_mix_w1.weight',
  'time_mix_w2.weight',
  'time_mix_v0.weight',
  'time_mix_v1.weight',
  'time_mix_v2.weight',
  'time_mix_a0.weight',
  'time_mix_a1.weight',
  'time_mix_a2.weight',
  'time_mix_g1.weight',
  'time_mix_g2.weight',
  'time_mix_decay_w1.weight',
  'time_mix_decay_w2.weight',
  'time_mix_lerp_fused.weight',
  'attn_rel_b.weight',
  '.position_embd',
  'sam.pos_embd',
  'sam.neck.',
  'sam.net_',
  '.rel_pos',
  '.patch_embd',
  '.patch_merger',
  'a.rvq.codebook',
  'mm.a.code_embd',
];

/**
 * Whether llama-quantize quantizes this tensor at all (otherwise it keeps its stored type, F32 here). It
 * takes tensors of 2 or more dimensions by ggml_n_dims, which counts up to the last one above 1: a
 * [1, n] matrix is a vector to it, so `rows` (the product of the outer dimensions) must exceed 1.
 */
export function ggufQuantizable(t: Pick<GgufTensorShape, 'name' | 'rows'>): boolean {
  if (t.rows < 2 || !t.name.endsWith('weight')) return false;
  if (t.name === 'position_embd.weight' || t.name === 'token_types.weight') return false;
  return !NEVER_QUANTIZED.some((p) => t.name.includes(p));
}

type Category = 'token_embd' | 'output' | 'attn_v' | 'ffn_down' | 'other';

function category(name: string): Category {
  if (name === 'output.weight') return 'output';
  if (name === 'token_embd.weight' || name === 'per_layer_token_embd.weight') return 'token_embd';
  // attn_qkv and attn_kv_b count as attn_v: llama.cpp's attn_v branch comes first and catches them.
  if (name.includes('attn_qkv.weight') || name.includes('attn_kv_b.weight') || name.includes('attn_v.weight')) return 'attn_v';
  if (name.includes('ffn_down')) return 'ffn_down';
  return 'other';
}

/** llama.cpp's use_more_bits: the first and last eighth of the layers, and every third one between. */
export function useMoreBits(layer: number, nLayers: number): boolean {
  const eighth = Math.trunc(nLayers / 8);
  return layer < eighth || layer >= Math.trunc((7 * nLayers) / 8) || (layer - eighth) % 3 === 2;
}

const isQuantized = (t: GgmlType) => GGML_TYPES[t].blockSize > 1;

/** tensor_type_fallback: the type llama.cpp uses when a row does not fit the wanted type's blocks. */
const FALLBACK: Partial<Record<GgmlType, GgmlType>> = { Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0' };

/**
 * The ggml type llama-quantize gives `tensor` for `target`, with the reason (see {@link ggufTensorType}).
 * Throws InputError where llama.cpp refuses: a row that fits neither the type nor a fallback
 * (the legacy types and Q8_0 have none).
 */
export function ggufTensorDecision(target: GgufTarget, t: GgufTensorShape, options: GgufMixOptions = {}): GgufTensorDecision {
  const spec = TARGETS[target];
  if (!ggufQuantizable(t)) return { type: 'F32', wanted: 'F32', reason: 'not quantized by llama.cpp (vector, norm or excluded name): F32' };
  const base = spec.type;
  if (!isQuantized(base)) return { type: base, wanted: base, reason: `${target}: every matrix ${base}` };
  const cat = category(t.name);
  const tied = options.hasOutput === false;
  let wanted = base;
  let reason = `${target} default: ${base}`;
  if (options.quantizeEmbeddings && (cat === 'token_embd' || cat === 'output')) {
    reason = `--quantize-embeddings: ${base}`;
  } else if (!spec.pure) {
    if (cat === 'output' || (tied && cat === 'token_embd')) {
      const what = cat === 'output' ? 'output' : 'tied token_embd (the output)';
      if (t.arch === 'falcon' || t.cols % GGML_TYPES[base].blockSize !== 0) {
        wanted = 'Q8_0';
        reason = `${what}: Q8_0 (rows of ${t.cols} do not fit ${base})`;
      } else if (base !== 'Q8_0') {
        wanted = 'Q6_K';
        reason = `${what}: Q6_K`;
      }
    } else if (cat === 'attn_v' && (target === 'q4_k_m' || target === 'q5_k_m')) {
      if (t.layer !== null && useMoreBits(t.layer, t.nLayers)) {
        wanted = 'Q6_K';
        reason = `attn_v of a use_more_bits layer (${t.layer} of ${t.nLayers}): Q6_K`;
      }
    } else if (cat === 'ffn_down' && t.layer !== null) {
      const more = useMoreBits(t.layer, t.nLayers);
      if (target === 'q4_k_m' && t.arch === 'falcon') {
        wanted = t.layer < Math.trunc(t.nLayers / 16) ? 'Q6_K' : more ? 'Q5_K' : 'Q4_K';
        reason = `falcon ffn_down (layer ${t.layer} of ${t.nLayers}): ${wanted}`;
      } else if ((target === 'q4_k_m' || target === 'q5_k_m') && more) {
        wanted = 'Q6_K';
        reason = `ffn_down of a use_more_bits layer (${t.layer} of ${t.nLayers}): Q6_K`;
      } else if ((target === 'q4_0' || target === 'q5_0') && options.importance && t.layer < Math.trunc(t.nLayers / 8)) {
        wanted = target === 'q4_0' ? 'Q4_1' : 'Q5_1';
        reason = `ffn_down in the first eighth of the layers with an importance matrix: ${wanted}`;
      }
    }
  }
  const block = GGML_TYPES[wanted].blockSize;
  if (t.cols % block === 0) return { type: wanted, wanted, reason };
  const fallback = FALLBACK[wanted];
  const misfit = `tensor ${t.name}: ${t.cols} columns is not a multiple of ${block} (${wanted})`;
  if (fallback === undefined) {
    throw new InputError(`${misfit} — llama.cpp has no fallback for ${wanted} and refuses this file type; a K-quant target falls back`);
  }
  if (t.cols % GGML_TYPES[fallback].blockSize !== 0) {
    return { type: 'F16', wanted, reason: `${misfit} — nor of 32 (${fallback}): llama.cpp falls back to F16` };
  }
  return { type: fallback, wanted, reason: `${misfit} — llama.cpp falls back to ${fallback}` };
}

/**
 * llama.cpp's llama_tensor_get_type for these file types: which tensors get a higher type in Q4_K_M /
 * Q5_K_M (attn_v and attn_qkv, ffn_down of the use_more_bits layers: Q6_K), output Q6_K (Q8_0 where its
 * rows do not fit 256), token_embd the default type (the output's when tied), vectors and norms F32, and
 * the fallback for rows that do not fit: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16.
 *
 * Assumed as for the dense models llmopt writes: one attn_v (or attn_qkv) and one ffn_down per layer, so
 * llama.cpp's running counters equal the layer index; no experts; not LLaMA-2-70B (whose attn_v llama.cpp
 * raises to Q5_K).
 */
export function ggufTensorType(target: GgufTarget, tensor: GgufTensorShape, options?: GgufMixOptions): GgmlType {
  return ggufTensorDecision(target, tensor, options).type;
}

/**
 * The decisions for a whole model's tensors at once, as llama-quantize makes them: whether the embedding
 * is tied (no output.weight) is read from the names, so token_embd gets the output's type then.
 */
export function ggufMix(
  target: GgufTarget,
  tensors: GgufTensorShape[],
  options: Omit<GgufMixOptions, 'hasOutput'> = {},
): GgufTensorDecision[] {
  const hasOutput = tensors.some((t) => t.name === 'output.weight');
  return tensors.map((t) => ggufTensorDecision(target, t, { ...options, hasOutput }));
}

/** Bits per weight of a ggml type, block scales included (Q4_0 4.5, Q8_0 8.5, Q6_K 6.5625). */
export function ggmlBitsPerWeight(type: GgmlType): number {
  const t = GGML_TYPES[type];
  return (t.blockBytes * 8) / t.blockSize;
}

/**
 * Whether llama.cpp's Q4_K_M gives this tensor more bits than its base Q4_K (the attn_v and ffn_down of the
 * use_more_bits layers, and the output: Q6_K), read from {@link ggufTensorDecision}'s table itself, so the
 * `--mix k-quant-m` of the other targets and of ONNX raise exactly the tensors Q4_K_M raises. Which tensors,
 * not whether a row fits: the row fit is the caller's type's business.
 */
export function kQuantMRaises(t: Pick<GgufTensorShape, 'name' | 'layer' | 'nLayers' | 'arch' | 'rows'>, hasOutput: boolean): boolean {
  const shape = { ...t, cols: GGML_TYPES.Q6_K.blockSize };
  if (!ggufQuantizable(shape)) return false;
  return ggmlBitsPerWeight(ggufTensorDecision('q4_k_m', shape, { hasOutput }).wanted) > ggmlBitsPerWeight('Q4_K');
}
