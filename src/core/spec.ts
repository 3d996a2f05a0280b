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
    };

/** Float dtype of a checkpoint's weights (`torch_dtype`). */
export type WeightDtype = 'float32' | 'float16' | 'bfloat16';

/** A Llama-family decoder: pre-norm RMSNorm blocks, rotary attention with grouped KV heads, SwiGLU MLP. */
export interface DecoderSpec {
  architecture: 'llama';
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
  attentionBias: boolean;
  mlpBias: boolean;
  weightDtype: WeightDtype;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
}

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
  const { hiddenSize: h, headDim: d, numHeads, kvHeads, intermediateSize: f, vocabSize } = spec;
  const out = new Map<string, number[]>();
  out.set(EMBED_TOKENS, [vocabSize, h]);
  for (let i = 0; i < spec.numLayers; i++) {
    const n = layerTensorNames(i);
    out.set(n.inputNorm, [h]);
    out.set(n.postAttentionNorm, [h]);
    const linears: Array<[string, number, number, boolean]> = [
      [n.q, numHeads * d, h, spec.attentionBias],
      [n.k, kvHeads * d, h, spec.attentionBias],
      [n.v, kvHeads * d, h, spec.attentionBias],
      [n.o, h, numHeads * d, spec.attentionBias],
      [n.gate, f, h, spec.mlpBias],
      [n.up, f, h, spec.mlpBias],
      [n.down, h, f, spec.mlpBias],
    ];
    for (const [name, rows, cols, bias] of linears) {
      out.set(`${name}.weight`, [rows, cols]);
      if (bias) out.set(`${name}.bias`, [rows]);
    }
  }
  out.set(FINAL_NORM, [h]);
  if (!spec.tiedEmbeddings) out.set(LM_HEAD, [vocabSize, h]);
  return out;
}

/** Parameter count of a spec (tied embeddings counted once). */
export function parameterCount(spec: DecoderSpec): number {
  let n = 0;
  for (const shape of expectedTensors(spec).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}
