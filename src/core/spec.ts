// The architecture-neutral description of a decoder model that every stage works from:
// graph builders, passes and the runtime read this, never config.json directly.

/** RoPE frequency scaling, as Hugging Face's `rope_scaling` describes it. */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositions: number;
    }
  | {
      /**
       * Phi-3.5 / Phi-4-mini: per-frequency divisors, the short ones while the sequence (max position + 1) stays within
       * originalMaxPositions, the long ones past it; cos and sin are scaled by attentionFactor either way.
       */
      type: 'longrope';
      shortFactor: number[];
      longFactor: number[];
      originalMaxPositions: number;
      attentionFactor: number;
    };

/** The MLP's gate activation (Hugging Face hidden_act / hidden_activation: silu, gelu_pytorch_tanh). */
export type MlpActivation = 'silu' | 'gelu_tanh';

/** Float dtype of a checkpoint's weights (`torch_dtype`). */
export type WeightDtype = 'float32' | 'float16' | 'bfloat16';

/** The linear layers of a decoder layer, in Hugging Face's module names (q_proj -> q). */
export const PROJECTIONS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
export type Projection = (typeof PROJECTIONS)[number];

/**
 * A Llama-family decoder: pre-norm RMSNorm blocks, rotary attention with grouped KV heads, SwiGLU MLP.
 * The fields past the Llama baseline (biases per projection, q/k norms, layers without rotary) are
 * architecture-neutral: model/architectures/ says which architecture sets which; the builder only reads them.
 */
export interface DecoderSpec {
  /** The architecture description it was read with (model/architectures/: llama, qwen2, qwen3, smollm3, ...). */
  architecture: string;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** Key/value heads (grouped-query attention when smaller than numHeads). */
  kvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  /** Longest context the model was trained for: the size of the rotary caches. */
  maxPositions: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  tiedEmbeddings: boolean;
  /** Which linear layers carry a bias (Llama: attention_bias / mlp_bias; Qwen2: q, k and v but not o). */
  biases: Record<Projection, boolean>;
  /** RMSNorm over head_dim on every query and key head before the rotary embedding (Qwen3's q_norm, k_norm). */
  qkNorm: boolean;
  /** Per layer, whether it applies the rotary embedding (SmolLM3's no_rope_layers); null: every layer does. */
  ropeLayers: boolean[] | null;
  /** Leading dims of each head the rotary embedding turns (partial_rotary_factor x head_dim, Phi-4-mini); absent: all. */
  rotaryDim?: number;
  /** Projections the checkpoint stores stacked in one tensor per layer (Phi-3's qkv_proj, gate_up_proj); absent: none. */
  fusedTensors?: FusedTensor[];
  weightDtype: WeightDtype;
  // Gemma-style fields, all optional: absent means the Llama baseline (so Llama-family specs and graphs are unchanged).
  /** RMSNorm scales by (normOffset + weight) (Gemma's (1 + w)); the stored weight stays as the checkpoint has it. */
  normOffset?: number;
  /**
   * Four norms per layer (Gemma 2/3): post_attention_layernorm on the attention output before the residual add,
   * pre_feedforward_layernorm before the MLP, post_feedforward_layernorm on the MLP output before the add.
   */
  sandwichNorms?: boolean;
  /** The MLP's gate activation: silu (SwiGLU, the default) or tanh-approximated GELU (GeGLU, gelu_pytorch_tanh). */
  activation?: MlpActivation;
  /** Embedding rows are multiplied by this (Gemma: sqrt(hidden) rounded to the weight dtype). */
  embeddingScale?: number;
  /** Attention scores are q.k times this (Gemma: query_pre_attn_scalar^-0.5); absent: 1/sqrt(headDim). */
  attentionScale?: number;
  /** Attention scores soft-capped to tanh(x / c) * c after scaling (Gemma 2's attn_logit_softcapping). */
  attnSoftcap?: number;
  /** Logits soft-capped to tanh(x / c) * c (Gemma 2's final_logit_softcapping). */
  finalSoftcap?: number;
  /** Sliding-window attention: a query at position p sees keys at positions in (p - slidingWindow, p]. */
  slidingWindow?: number;
  /** Per layer, whether it attends through slidingWindow; absent with a window: every layer does (Mistral). */
  slidingLayers?: boolean[];
  /** Rotary base of sliding layers, without rope scaling (Gemma 3's rope_local_base_freq); absent: as global layers. */
  localRopeTheta?: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
}

/**
 * A checkpoint tensor holding several projections' rows stacked in order, under a layer's module path
 * (`self_attn.qkv_proj` = [q; k; v]). Every pass sees the parts (core/fused.ts); writers fuse them back.
 */
export interface FusedTensor {
  module: string;
  parts: readonly Projection[];
}

/** Dims of each head the rotary embedding turns (the first ones; the rest pass through). */
export const rotaryDimOf = (spec: DecoderSpec): number => spec.rotaryDim ?? spec.headDim;

/** Hugging Face tensor names of one decoder layer, the names every pass and graph uses. */
export function layerTensorNames(layer: number) {
  const p = `model.layers.${layer}`;
  return {
    inputNorm: `${p}.input_layernorm.weight`,
    postAttentionNorm: `${p}.post_attention_layernorm.weight`,
    q: `${p}.self_attn.q_proj`,
    k: `${p}.self_attn.k_proj`,
    v: `${p}.self_attn.v_proj`,
    o: `${p}.self_attn.o_proj`,
    qNorm: `${p}.self_attn.q_norm.weight`,
    kNorm: `${p}.self_attn.k_norm.weight`,
    preFeedforwardNorm: `${p}.pre_feedforward_layernorm.weight`,
    postFeedforwardNorm: `${p}.post_feedforward_layernorm.weight`,
    gate: `${p}.mlp.gate_proj`,
    up: `${p}.mlp.up_proj`,
    down: `${p}.mlp.down_proj`,
  };
}

export const EMBED_TOKENS = 'model.embed_tokens.weight';
export const FINAL_NORM = 'model.norm.weight';
export const LM_HEAD = 'lm_head.weight';

/** Every tensor a checkpoint of this spec must hold, with its [out, in] shape. */
export function expectedTensors(spec: DecoderSpec): Map<string, number[]> {
  const { hiddenSize: h, headDim: d, vocabSize } = spec;
  const out = new Map<string, number[]>();
  out.set(EMBED_TOKENS, [vocabSize, h]);
  for (let i = 0; i < spec.numLayers; i++) {
    const n = layerTensorNames(i);
    out.set(n.inputNorm, [h]);
    out.set(n.postAttentionNorm, [h]);
    if (spec.sandwichNorms) {
      out.set(n.preFeedforwardNorm, [h]);
      out.set(n.postFeedforwardNorm, [h]);
    }
    for (const proj of PROJECTIONS) {
      const [rows, cols] = projectionShape(spec, proj);
      out.set(`${n[proj]}.weight`, [rows, cols]);
      if (spec.biases[proj]) out.set(`${n[proj]}.bias`, [rows]);
    }
    if (spec.qkNorm) {
      out.set(n.qNorm, [d]);
      out.set(n.kNorm, [d]);
    }
  }
  out.set(FINAL_NORM, [h]);
  if (!spec.tiedEmbeddings) out.set(LM_HEAD, [vocabSize, h]);
  return out;
}

/** [out, in] features of a layer's linear layer. */
export function projectionShape(spec: DecoderSpec, proj: Projection): [number, number] {
  const { hiddenSize: h, headDim: d, numHeads, kvHeads, intermediateSize: f } = spec;
  const shapes: Record<Projection, [number, number]> = {
    q: [numHeads * d, h],
    k: [kvHeads * d, h],
    v: [kvHeads * d, h],
    o: [h, numHeads * d],
    gate: [f, h],
    up: [f, h],
    down: [h, f],
  };
  return shapes[proj];
}

/** Whether layer i applies the rotary embedding. */
export const layerHasRope = (spec: DecoderSpec, layer: number): boolean => spec.ropeLayers?.[layer] ?? true;

/** Layer i's sliding window (in tokens), or null when it attends to the whole context. */
export function layerWindow(spec: DecoderSpec, layer: number): number | null {
  if (spec.slidingWindow === undefined) return null;
  return (spec.slidingLayers?.[layer] ?? true) ? spec.slidingWindow : null;
}

/** Whether layer i rotates with the local rotary base (a sliding layer of a model with localRopeTheta). */
export const layerUsesLocalRope = (spec: DecoderSpec, layer: number): boolean =>
  spec.localRopeTheta !== undefined && layerWindow(spec, layer) !== null;

/** Biases of every projection set to one flag each for attention and MLP (Llama's attention_bias / mlp_bias). */
export function uniformBiases(attention: boolean, mlp: boolean): Record<Projection, boolean> {
  return { q: attention, k: attention, v: attention, o: attention, gate: mlp, up: mlp, down: mlp };
}

/** Parameter count of a spec (tied embeddings counted once). */
export function parameterCount(spec: DecoderSpec): number {
  let n = 0;
  for (const shape of expectedTensors(spec).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}
