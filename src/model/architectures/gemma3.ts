// Gemma 3 text: the Gemma body (gemma.ts) with (1 + w) q/k norms, five sliding layers to one global
// (layer_types or sliding_window_pattern), and two rotary bases: rope_local_base_freq (unscaled) for sliding
// layers, rope_theta with rope_scaling for global ones. gemma3 (Gemma3ForConditionalGeneration) is the same
// text model read from text_config and the language_model tensors; its vision tower is not read.
import type { Json } from '../../formats/hf-config.js';
import { gemmaConfigJson, gemmaDifferences, slidingLayers } from './gemma.js';
import type { Architecture, ArchitectureInput } from './architecture.js';

/** Gemma3TextConfig's defaults: the published multimodal configs leave most text keys to them. */
const TEXT_DEFAULTS: Json = {
  vocab_size: 262208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  rope_local_base_freq: 10000,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  sliding_window_pattern: 6,
  bos_token_id: 2,
  eos_token_id: 1,
  pad_token_id: 0,
};

function differences({ cfg, base }: ArchitectureInput) {
  const pattern = cfg.int('sliding_window_pattern', 6);
  return {
    ...gemmaDifferences(cfg, base, { attn: null, final: null }),
    qkNorm: true,
    slidingLayers: slidingLayers(cfg, base.numLayers, (i) => (i + 1) % pattern !== 0),
    localRopeTheta: cfg.num('rope_local_base_freq', 10000),
  };
}

export const gemma3Text: Architecture = {
  name: 'gemma3',
  modelType: 'gemma3_text',
  classes: ['Gemma3ForCausalLM'],
  label: 'gemma3_text',
  ownKeys: ['hidden_act'],
  config: (json) => ({ ...TEXT_DEFAULTS, ...json }),
  configJson: (spec, base) => ({ ...gemmaConfigJson(spec, base), rope_local_base_freq: spec.localRopeTheta ?? spec.ropeTheta }),
  differences,
};

export const gemma3: Architecture = {
  name: 'gemma3',
  modelType: 'gemma3',
  classes: ['Gemma3ForConditionalGeneration'],
  label: 'gemma3 (its text model)',
  ownKeys: ['hidden_act'],
  // The text model's config is text_config; dtype and special tokens may sit only at the top level.
  config(json, cfg) {
    const text = json.text_config;
    if (typeof text !== 'object' || text === null || Array.isArray(text))
      cfg.fail('text_config', 'is missing (gemma3 keeps its text model there)');
    const top = Object.fromEntries(
      ['torch_dtype', 'dtype', 'bos_token_id', 'eos_token_id', 'pad_token_id'].filter((k) => k in json).map((k) => [k, json[k]]),
    );
    return { ...TEXT_DEFAULTS, ...top, ...(text as Json) };
  },
  tensorPrefixes: ['language_model.', 'model.language_model.'],
  textModel: gemma3Text,
  differences,
};
