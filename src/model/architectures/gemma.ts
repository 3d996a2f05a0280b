// What Gemma 2 and Gemma 3 share over the Llama baseline: sqrt(hidden) embedding scale, (1 + w) RMSNorms, four
// norms per layer, GeGLU with tanh-GELU, query_pre_attn_scalar, optional soft-caps and sliding/global layer types.
import { InputError } from '../../core/errors.js';
import type { DecoderSpec, WeightDtype } from '../../core/spec.js';
import { bfloat16ToFloat32, float16ToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits } from '../../formats/dtype.js';
import type { ConfigReader, Json } from '../../formats/hf-config.js';

/** x rounded to the weight dtype, as Hugging Face's torch.tensor(x, dtype) rounds it. */
function roundTo(x: number, dtype: WeightDtype): number {
  if (dtype === 'bfloat16') return bfloat16ToFloat32(float32ToBfloat16Bits(x));
  if (dtype === 'float16') return float16ToFloat32(float32ToFloat16Bits(x));
  return Math.fround(x);
}

/** A positive number or null (soft-cap keys); `fallback` when the key is absent. */
function optionalCap(cfg: ConfigReader, key: string, fallback: number | null): number | undefined {
  if (!(key in cfg.json)) return fallback ?? undefined;
  if (cfg.json[key] === null) return undefined;
  const v = cfg.num(key);
  if (v <= 0) cfg.fail(key, `must be a positive number or null, found ${v}`);
  return v;
}

/**
 * Which layers slide: `layer_types` when given (sliding_attention / full_attention, one per layer), else
 * `fallback(i)` (Gemma 2: even layers; Gemma 3: all but every sliding_window_pattern-th).
 */
export function slidingLayers(cfg: ConfigReader, numLayers: number, fallback: (layer: number) => boolean): boolean[] {
  const types = cfg.json.layer_types;
  if (types === undefined || types === null) return Array.from({ length: numLayers }, (_, i) => fallback(i));
  if (!Array.isArray(types)) cfg.fail('layer_types', `must be a list of layer types, found ${JSON.stringify(types)}`);
  if (types.length !== numLayers) {
    throw new InputError(`${cfg.path}: "layer_types" has ${types.length} entries, but num_hidden_layers is ${numLayers}`);
  }
  return types.map((t, i) => {
    if (t === 'sliding_attention') return true;
    if (t === 'full_attention') return false;
    return cfg.fail('layer_types', `entry ${i} ${JSON.stringify(t)} is not supported (supported: sliding_attention, full_attention)`);
  });
}

/** query_pre_attn_scalar from the attention scale it implies (an integer in every published config). */
function queryPreAttnScalar(spec: DecoderSpec): number {
  if (spec.attentionScale === undefined) return spec.headDim;
  const v = spec.attentionScale ** -2;
  return Math.abs(v - Math.round(v)) < 1e-9 * v ? Math.round(v) : v;
}

/** The config.json keys Gemma 2 and 3 write over the Llama baseline's (read back by gemmaDifferences and slidingLayers). */
export function gemmaConfigJson(spec: DecoderSpec, { hidden_act, mlp_bias, ...base }: Json): Json {
  return {
    ...base,
    hidden_activation: 'gelu_pytorch_tanh',
    query_pre_attn_scalar: queryPreAttnScalar(spec),
    attn_logit_softcapping: spec.attnSoftcap ?? null,
    final_logit_softcapping: spec.finalSoftcap ?? null,
    sliding_window: spec.slidingWindow ?? null,
    layer_types: (spec.slidingLayers ?? []).map((s) => (s ? 'sliding_attention' : 'full_attention')),
  };
}

/** The differences Gemma 2 and 3 share; `softcapDefaults` are the Hugging Face config class's defaults. */
export function gemmaDifferences(
  cfg: ConfigReader,
  base: DecoderSpec,
  softcapDefaults: { attn: number | null; final: number | null },
): Partial<DecoderSpec> {
  // Hugging Face's Gemma MLP reads hidden_activation (hidden_act, when present too, is not what it applies).
  const act = cfg.str('hidden_activation') ?? 'gelu_pytorch_tanh';
  if (act !== 'gelu_pytorch_tanh') cfg.fail('hidden_activation', `${act} is not supported (supported: gelu_pytorch_tanh)`);
  const attnSoftcap = optionalCap(cfg, 'attn_logit_softcapping', softcapDefaults.attn);
  const finalSoftcap = optionalCap(cfg, 'final_logit_softcapping', softcapDefaults.final);
  return {
    normOffset: 1,
    sandwichNorms: true,
    activation: 'gelu_tanh',
    embeddingScale: roundTo(Math.sqrt(base.hiddenSize), base.weightDtype),
    attentionScale: cfg.num('query_pre_attn_scalar', 256) ** -0.5,
    ...(attnSoftcap === undefined ? {} : { attnSoftcap }),
    ...(finalSoftcap === undefined ? {} : { finalSoftcap }),
    slidingWindow: cfg.int('sliding_window', 4096),
    // Gemma's config classes tie the embeddings unless told otherwise.
    tiedEmbeddings: cfg.bool('tie_word_embeddings', true),
  };
}
