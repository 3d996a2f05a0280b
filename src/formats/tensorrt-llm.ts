// The TensorRT-LLM checkpoint (docs/source/architecture/checkpoint.md in NVIDIA/TensorRT-LLM): a
// config.json with the architecture, dtype and `mapping` {world_size, tp_size, pp_size}, and one
// rank{r}.safetensors per rank (rank = pp_rank * tp + tp_rank) holding that rank's shards under
// TensorRT-LLM's names, as its Llama converter writes them (tensorrt_llm/models/llama/convert.py):
//   attention.qkv   = concat(q, k, v) rows of the rank's heads   attention.dense = o_proj columns
//   mlp.fc = gate_proj rows   mlp.gate = up_proj rows           mlp.proj = down_proj columns
//   layers renumbered from 0 within a pipeline stage; lm_head always split over tp (rows, zero-padded
//   to a multiple of tp); vocab_embedding whole, or split when use_parallel_embedding.
// Row-parallel biases (dense, proj) are whole on every rank: TensorRT-LLM adds them after the all-reduce.
// Qwen2 / Qwen3 go to its QWen format (tensorrt_llm/models/qwen: config.py, convert.py): the same tensor
// names (qkv with q/k/v biases, dense without one), `qwen_type`, and Qwen3's attention.q_layernorm / k_layernorm
// (over head_dim: whole on every rank).
// Phi-3 goes to its Phi3ForCausalLM format (tensorrt_llm/models/phi3: config.py Phi3Config.from_hugging_face,
// convert.py load_weights_from_hf_model): qkv_proj as attention.qkv, o_proj as attention.dense, gate_up_proj as one
// mlp.fc with its halves swapped ([up; gate]: TensorRT-LLM's swiglu gates with the second half), down_proj as
// mlp.proj; hidden_act "swiglu", rotary_pct = partial_rotary_factor. At tp > 1 the rank layout is the one
// models/phi3/model.py and layers/mlp.py build: Attention's qkv ColumnLinear holds [q_r; k_r; v_r] (a kv head repeated
// when kv heads < tp, as every TensorRT-LLM Attention takes them), MLP's fc ColumnLinear holds [up_r; gate_r] because
// functional.swiglu chunks each rank's fc output into halves, dense and proj RowLinear take o/down columns, lm_head is
// ColumnLinear over pad_vocab_size(vocab, tp). TensorRT-LLM's own split (phi3/split_weights.py split_weights_tp) cuts
// the fused [up; gate] into tp contiguous row blocks instead (at tp 2 one rank gets all of up, the other all of gate),
// which that swiglu does not compute with; llmopt follows the model. Phi3Model has no pipeline stages (no send/recv;
// every rank builds vocab_embedding, ln_f and lm_head), so --pp 1 only; its config reads no sliding_window (refused).
// Longrope: Phi3Config.from_hugging_face takes it exactly when max_position_embeddings >= 128000 (Phi-3-mini-128k,
// Phi-3.5-mini, Phi-4-mini), writing position_embedding_type long_rope, original_max_position_embeddings (the HF config's
// top-level key) and rope_scaling's short_factor / long_factor as longrope_scaling_short_factors / _long_factors, and no
// rotary_scaling; below that it drops rope_scaling (plain rope), and at 128000 or more it needs the factors, so both
// are refused. The tables span rotary_pct * head_size dims (Phi-4-mini's 96 of 128), both scaled by
// sqrt(1 + ln(s) / ln(original)), s = max_position_embeddings / original (functional.py RopeEmbeddingUtils
// .create_sinusoidal_positions_long_rope_for_attention_plugin): an attention_factor other than that is refused. The
// attention plugin takes the long table when the context exceeds original_max_position_embeddings, as Hugging Face does.
// Gemma 3 goes to its Gemma3ForCausalLM format (tensorrt_llm/models/gemma: config.py GemmaConfig with the Gemma3
// config group query_pre_attn_scalar, final_logit_softcapping, _sliding_window_pattern, rope_local_base_freq,
// sliding_window; convert.py load_gemma_weights with HfParser): the Llama names plus attention.q_layernorm /
// k_layernorm, pre_feedforward_layernorm and post_feedforward_layernorm, post_attention_layernorm as post_layernorm,
// and every norm weight stored plus 1 (TensorRT-LLM's RmsNorm scales by w, Gemma's by 1 + w). GemmaConfig reads no
// rope_scaling, so that is refused.
// Gemma 2 goes to its Gemma2ForCausalLM format (the same module: GemmaConfig with the Gemma2ConfigGroup
// query_pre_attn_scalar, final_logit_softcapping, attn_logit_softcapping; the same HfParser weights, no q/k norms).
// That group has no sliding window: TensorRT-LLM takes Gemma 2's per layer at run time (max_attention_window_size),
// and attends globally on every layer without it.
// Gemma's tp split (load_gemma_weights) is the Llama one: q rows, k/v rows (one kv head: whole on every rank), o and
// down columns, gate/up rows, norms whole, lm_head = the embedding in tp equal row blocks (no padding, so the vocabulary
// must divide), vocab_embedding split only with use_parallel_embedding. More than one kv head but fewer than tp would
// be cut mid-head there, so that is refused. Its pipeline stages come from models/gemma/model.py (vocab_embedding on
// the first, ln_f and lm_head on the last, DecoderLayerList numbering each stage's layers from 0).
import { join } from 'node:path';
import { statSync, writeFileSync } from 'node:fs';
import { fromFloat32 } from './dtype.js';
import { writeSafetensors, type TensorEntry } from './safetensors.js';
import { layerTensorNames, EMBED_TOKENS, FINAL_NORM, LM_HEAD, type DecoderSpec } from '../core/spec.js';
import type { WeightSource } from '../core/weights.js';

const DTYPES = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' } as const;

/** TensorRT-LLM's default layer split (Mapping.pp_layers): torch.tensor_split, the first num_layers % pp stages one layer longer. */
export function tensorRtLlmStages(numLayers: number, pp: number): Array<{ from: number; to: number }> {
  const base = Math.floor(numLayers / pp);
  const extra = numLayers % pp;
  const out: Array<{ from: number; to: number }> = [];
  let from = 0;
  for (let s = 0; s < pp; s++) {
    const to = from + base + (s < extra ? 1 : 0);
    out.push({ from, to });
    from = to;
  }
  return out;
}

/** llmopt's architectures TensorRT-LLM's checkpoint formats hold, with the `architecture` class its config.json names. */
const TENSORRT_LLM_CLASSES: Record<string, string> = {
  llama: 'LlamaForCausalLM',
  mistral: 'LlamaForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
  phi3: 'Phi3ForCausalLM',
  gemma3: 'Gemma3ForCausalLM',
  gemma2: 'Gemma2ForCausalLM',
};
export const TENSORRT_LLM_ARCHITECTURES = Object.keys(TENSORRT_LLM_CLASSES);
const isQwen = (spec: DecoderSpec) => spec.architecture === 'qwen2' || spec.architecture === 'qwen3';
const isPhi3 = (spec: DecoderSpec) => spec.architecture === 'phi3';
const isGemma3 = (spec: DecoderSpec) => spec.architecture === 'gemma3';
/** Gemma 2 or 3: TensorRT-LLM's gemma module (GemmaConfig, norms stored plus 1, four norms a layer). */
const isGemma = (spec: DecoderSpec) => isGemma3(spec) || spec.architecture === 'gemma2';

/** Gemma 3's local/global period: every p-th layer global (Gemma3ConfigGroup._sliding_window_pattern), or null. */
function slidingPattern(spec: DecoderSpec): number | null {
  const sliding = spec.slidingLayers ?? [];
  const p = sliding.indexOf(false) + 1;
  if (p === 0) return sliding.length > 0 && sliding.length < spec.numLayers ? null : spec.numLayers + 1;
  return sliding.every((s, i) => s === ((i + 1) % p !== 0)) ? p : null;
}

/** Why TensorRT-LLM's checkpoint formats cannot hold `spec` at `tp` x `pp` (null when they can): one clause for a refusal. */
export function tensorRtLlmUnsupported(spec: DecoderSpec, tp = 1, pp = 1): string | null {
  if (!TENSORRT_LLM_CLASSES[spec.architecture]) {
    const names = TENSORRT_LLM_ARCHITECTURES;
    return `writes ${names.slice(0, -1).join(', ')} and ${names.at(-1)} checkpoints, not ${spec.architecture}`;
  }
  if (spec.architecture === 'phi3') {
    if (pp > 1)
      return (
        `writes phi3 at --pp 1 only: TensorRT-LLM's Phi3Model (models/phi3/model.py) has no pipeline stages ` +
        `(every rank builds vocab_embedding, ln_f and lm_head; nothing passes between ranks)`
      );
    if (spec.slidingWindow !== undefined && spec.slidingWindow < spec.maxPositions)
      return (
        `cannot hold phi3's sliding_window ${spec.slidingWindow}: ` +
        `TensorRT-LLM's Phi3Config reads none (every layer would attend globally)`
      );
    const rope = phi3Longrope(spec);
    if (rope !== null) return rope;
  }
  if (isGemma(spec)) {
    const { architecture: arch, kvHeads: kv, vocabSize: v } = spec;
    if (spec.ropeScaling !== null) return `cannot hold ${arch}'s rope_scaling: TensorRT-LLM's GemmaConfig reads none`;
    if (kv > 1 && kv % tp !== 0)
      return (
        `cannot split ${arch}'s ${kv} key/value heads over --tp ${tp}: TensorRT-LLM's Gemma converter (models/gemma/convert.py) ` +
        `repeats a single kv head on every rank but cuts more into tp row blocks (choose a --tp that divides ${kv})`
      );
    if (v % tp !== 0)
      return (
        `cannot split ${arch}'s lm_head over --tp ${tp}: TensorRT-LLM's Gemma converter (models/gemma/convert.py) cuts the ` +
        `vocabulary of ${v} into tp equal row blocks (choose a --tp that divides it)`
      );
  }
  if (isGemma3(spec)) {
    if (slidingPattern(spec) === null)
      return `cannot hold gemma3's layer_types: TensorRT-LLM's Gemma 3 takes one global layer every _sliding_window_pattern layers`;
  }
  // One attn_bias flag covers q, k and v (fused qkv); QWen's attention.dense and MLP carry no bias.
  const b = spec.biases;
  if (b.q !== b.k || b.q !== b.v) return 'holds one bias flag for q, k and v; this checkpoint biases only some of them';
  if (isQwen(spec) && (b.o || b.gate || b.up || b.down))
    return `writes ${spec.architecture} with biases on q, k and v only (its attention.dense and MLP have none)`;
  return null;
}

/** Phi3Config.from_hugging_face writes longrope from contexts this long (models/phi3/config.py). */
const PHI3_LONG_CONTEXT = 128000;

/** The factor TensorRT-LLM scales both longrope tables by: sqrt(1 + ln(s) / ln(original)), 1 when s <= 1. */
function longropeScale(maxPositions: number, original: number): number {
  const s = maxPositions / original;
  return s <= 1 ? 1 : Math.sqrt(1 + Math.log(s) / Math.log(original));
}

/** Why Phi3Config cannot carry phi3's rope as llmopt reads it (null when it can). */
function phi3Longrope(spec: DecoderSpec): string | null {
  const rs = spec.ropeScaling;
  const n = spec.maxPositions;
  const config = `TensorRT-LLM's Phi3Config (models/phi3/config.py) takes longrope exactly when max_position_embeddings >= 128000`;
  if (rs === null)
    return n >= PHI3_LONG_CONTEXT
      ? `cannot hold phi3 at max_position_embeddings ${n} without rope_scaling: ${config} and reads its short_factor / long_factor`
      : null;
  if (n < PHI3_LONG_CONTEXT)
    return (
      `cannot hold phi3's longrope rope_scaling at max_position_embeddings ${n}: ${config} ` +
      '(below it, rope_scaling is dropped: plain rope)'
    );
  if (rs.type !== 'longrope') return `cannot hold phi3's ${rs.type} rope_scaling: ${config}`;
  const scale = longropeScale(n, rs.originalMaxPositions);
  if (Math.abs(rs.attentionFactor - scale) > 1e-6 * scale)
    return (
      `cannot hold phi3's longrope attention factor ${rs.attentionFactor}: TensorRT-LLM scales cos and sin by ` +
      `sqrt(1 + ln(s) / ln(original)), s = max_position_embeddings / original_max_position_embeddings, = ${scale} ` +
      `(functional.py RopeEmbeddingUtils) and reads no attention_factor`
    );
  return null;
}

/** config.json of the checkpoint (LLaMAConfig fields). */
export function tensorRtLlmConfig(spec: DecoderSpec, tp: number, pp: number, parallelEmbedding: boolean): Record<string, unknown> {
  const rs = spec.ropeScaling;
  const config: Record<string, unknown> = {
    architecture: TENSORRT_LLM_CLASSES[spec.architecture],
    dtype: spec.weightDtype,
    logits_dtype: 'float32',
    vocab_size: spec.vocabSize,
    max_position_embeddings: spec.maxPositions,
    hidden_size: spec.hiddenSize,
    num_hidden_layers: spec.numLayers,
    num_attention_heads: spec.numHeads,
    num_key_value_heads: spec.kvHeads,
    head_size: spec.headDim,
    hidden_act: isPhi3(spec) ? 'swiglu' : isGemma(spec) ? 'gelu_pytorch_tanh' : 'silu',
    intermediate_size: spec.intermediateSize,
    norm_epsilon: spec.rmsNormEps,
    position_embedding_type: 'rope_gpt_neox',
    rotary_base: spec.ropeTheta,
    rotary_scaling:
      rs === null
        ? null
        : rs.type === 'linear'
          ? { type: 'linear', factor: rs.factor }
          : rs.type === 'longrope'
            ? null
            : {
                rope_type: 'llama3',
                factor: rs.factor,
                low_freq_factor: rs.lowFreqFactor,
                high_freq_factor: rs.highFreqFactor,
                original_max_position_embeddings: rs.originalMaxPositions,
              },
    attn_bias: spec.biases.q,
    mlp_bias: spec.biases.gate,
    tie_word_embeddings: spec.tiedEmbeddings,
    use_parallel_embedding: parallelEmbedding,
    embedding_sharding_dim: 0,
    mapping: { world_size: tp * pp, tp_size: tp, pp_size: pp },
    quantization: { quant_algo: null, kv_cache_quant_algo: null },
  };
  // QWenConfig's own fields: the variant (its loader and Qwen3's q/k layernorms follow it); MoE stays off by default.
  if (isQwen(spec)) Object.assign(config, { qwen_type: spec.architecture, use_logn_attn: false });
  if (isPhi3(spec)) {
    // Phi3Config has no LLaMA bias flags; rotary_pct is PretrainedConfig's partial rotary fraction.
    delete config.attn_bias;
    delete config.mlp_bias;
    config.rotary_pct = (spec.rotaryDim ?? spec.headDim) / spec.headDim;
    // Longrope as Phi3Config.from_hugging_face writes it (tensorRtLlmUnsupported admits it from 128000 positions only).
    if (rs?.type === 'longrope')
      Object.assign(config, {
        position_embedding_type: 'long_rope',
        original_max_position_embeddings: rs.originalMaxPositions,
        longrope_scaling_short_factors: rs.shortFactor,
        longrope_scaling_long_factors: rs.longFactor,
      });
  }
  if (isGemma(spec)) {
    // GemmaConfig: inter_layernorms for the four norms, and its Gemma 3 or Gemma 2 config group (from the HF config's keys).
    const scalar = (spec.attentionScale ?? spec.headDim ** -0.5) ** -2;
    Object.assign(config, {
      inter_layernorms: true,
      query_pre_attn_scalar: Math.abs(scalar - Math.round(scalar)) < 1e-6 ? Math.round(scalar) : scalar,
      final_logit_softcapping: spec.finalSoftcap ?? null,
    });
  }
  if (isGemma3(spec)) {
    Object.assign(config, {
      _sliding_window_pattern: slidingPattern(spec),
      rope_local_base_freq: spec.localRopeTheta ?? 10000,
      sliding_window: spec.slidingWindow ?? null,
    });
  }
  // Gemma2ConfigGroup: the attention-logit cap (Gemma 3 has none), and no window (see the file header).
  if (spec.architecture === 'gemma2') config.attn_logit_softcapping = spec.attnSoftcap ?? null;
  return config;
}

/** One tensor of a rank file: its TensorRT-LLM name and shape, the Hugging Face tensors whose rows it stacks. */
export interface TensorRtLlmTensor {
  name: string;
  shape: number[];
  parts: string[];
  /** Stored as w + 1 (Gemma's norms). */
  plusOne?: boolean;
}

/** One rank to write: its place in the mapping, its layers, and its slices under Hugging Face names. */
export interface TensorRtLlmRank {
  rank: number;
  tpRank: number;
  layers: { from: number; to: number };
  first: boolean;
  last: boolean;
  /** The rank's slices (q/k/v/gate/up rows, o/down columns, biases whole; embedding whole or split). */
  weights: WeightSource;
}

/** Every tensor of one rank file: TensorRT-LLM name, shape, and the Hugging Face tensors concatenated (rows) to form it. */
export function tensorRtLlmRankTensors(spec: DecoderSpec, tp: number, r: TensorRtLlmRank): TensorRtLlmTensor[] {
  const out: TensorRtLlmTensor[] = [];
  const shape = (n: string) => r.weights.shape(n);
  const add = (name: string, parts: string[]) => {
    const s = parts.map(shape);
    // Gemma's norms scale by (1 + w): TensorRT-LLM's converter stores w + 1 (models/gemma/convert.py).
    const plusOne = isGemma(spec) && /(layernorm|ln_f)\.weight$/.test(name);
    out.push({ name, shape: [s.reduce((a, p) => a + p[0]!, 0), ...s[0]!.slice(1)], parts, ...(plusOne ? { plusOne } : {}) });
  };
  if (r.first) add('transformer.vocab_embedding.weight', [EMBED_TOKENS]);
  for (let i = r.layers.from; i < r.layers.to; i++) {
    const n = layerTensorNames(i);
    const p = `transformer.layers.${i - r.layers.from}`;
    add(`${p}.input_layernorm.weight`, [n.inputNorm]);
    add(`${p}.attention.qkv.weight`, [`${n.q}.weight`, `${n.k}.weight`, `${n.v}.weight`]);
    if (spec.biases.q) add(`${p}.attention.qkv.bias`, [`${n.q}.bias`, `${n.k}.bias`, `${n.v}.bias`]);
    add(`${p}.attention.dense.weight`, [`${n.o}.weight`]);
    if (spec.biases.o) add(`${p}.attention.dense.bias`, [`${n.o}.bias`]);
    if (spec.qkNorm) {
      add(`${p}.attention.q_layernorm.weight`, [n.qNorm]);
      add(`${p}.attention.k_layernorm.weight`, [n.kNorm]);
    }
    add(`${p}.post_layernorm.weight`, [n.postAttentionNorm]);
    if (spec.sandwichNorms) {
      add(`${p}.pre_feedforward_layernorm.weight`, [n.preFeedforwardNorm]);
      add(`${p}.post_feedforward_layernorm.weight`, [n.postFeedforwardNorm]);
    }
    if (isPhi3(spec)) add(`${p}.mlp.fc.weight`, [`${n.up}.weight`, `${n.gate}.weight`]);
    else {
      add(`${p}.mlp.fc.weight`, [`${n.gate}.weight`]);
      add(`${p}.mlp.gate.weight`, [`${n.up}.weight`]);
    }
    add(`${p}.mlp.proj.weight`, [`${n.down}.weight`]);
    if (spec.biases.gate) {
      add(`${p}.mlp.fc.bias`, [`${n.gate}.bias`]);
      add(`${p}.mlp.gate.bias`, [`${n.up}.bias`]);
      add(`${p}.mlp.proj.bias`, [`${n.down}.bias`]);
    }
  }
  if (r.last) {
    add('transformer.ln_f.weight', [FINAL_NORM]);
    out.push({
      name: 'lm_head.weight',
      shape: [Math.ceil(spec.vocabSize / tp), spec.hiddenSize],
      parts: [spec.tiedEmbeddings ? EMBED_TOKENS : LM_HEAD],
    });
  }
  return out;
}

/**
 * Writes config.json and rank{r}.safetensors into `dir`; `full` gives whole tensors (lm_head is cut
 * here, padded as TensorRT-LLM pads it). Returns the bytes of each rank file.
 */
export async function writeTensorRtLlmCheckpoint(
  dir: string,
  spec: DecoderSpec,
  full: WeightSource,
  tp: number,
  pp: number,
  parallelEmbedding: boolean,
  ranks: TensorRtLlmRank[],
  onTensor: () => void,
): Promise<number[]> {
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(tensorRtLlmConfig(spec, tp, pp, parallelEmbedding), null, 2)}\n`);
  const dtype = DTYPES[spec.weightDtype];
  const bytes: number[] = [];
  for (const r of ranks) {
    const tensors = tensorRtLlmRankTensors(spec, tp, r);
    const byName = new Map(tensors.map((t) => [t.name, t]));
    const entries: TensorEntry[] = tensors.map((t) => ({ name: t.name, dtype, shape: t.shape }));
    const file = join(dir, `rank${r.rank}.safetensors`);
    await writeSafetensors(file, entries, async (name) => {
      const t = byName.get(name)!;
      let values: Float32Array;
      if (name === 'lm_head.weight') {
        // Rows [tpRank * Vp, (tpRank + 1) * Vp) of the vocabulary padded with zero rows to tp * Vp.
        const all = await full.readFloat32(t.parts[0]!);
        const h = spec.hiddenSize;
        values = new Float32Array(t.shape[0]! * h);
        const start = r.tpRank * t.shape[0]! * h;
        values.set(all.subarray(Math.min(start, all.length), Math.min(start + values.length, all.length)));
      } else {
        const parts = await Promise.all(t.parts.map((p) => r.weights.readFloat32(p)));
        values = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
        let off = 0;
        for (const p of parts) {
          values.set(p, off);
          off += p.length;
        }
        if (t.plusOne) for (let i = 0; i < values.length; i++) values[i]! += 1;
      }
      onTensor();
      return fromFloat32(values, dtype);
    });
    bytes.push(statSync(file).size);
  }
  return bytes;
}
