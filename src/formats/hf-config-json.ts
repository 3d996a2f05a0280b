// config.json as Python writes it for the Hugging Face formats llmopt produces: the keys transformers types as float
// keep a decimal point (JSON.parse turned 10000.0 into 10000; json.load would read an int back), plus the
// safetensors header metadata torch's save_file writes.

/** `__metadata__` of every safetensors file transformers' save_pretrained writes (modeling_utils.py: {"format": "pt"}). */
export const PT_METADATA: Readonly<Record<string, string>> = { format: 'pt' };

/*
 * Float-typed fields of the configs llmopt reads (transformers' LlamaConfig, Qwen2Config, Qwen3Config, Gemma2Config,
 * Gemma3TextConfig, Phi3Config: rope_theta, rms_norm_eps, partial_rotary_factor, soft-capping; rope_scaling's factors).
 */
const FLOAT_KEYS = new Set([
  'rope_theta',
  'rope_local_base_freq',
  'rms_norm_eps',
  'partial_rotary_factor',
  'final_logit_softcapping',
  'attn_logit_softcapping',
  'factor',
  'low_freq_factor',
  'high_freq_factor',
  'attention_factor',
  'beta_fast',
  'beta_slow',
  'initializer_range',
  'attention_dropout',
]);
const MARK = '\u0000float:';

/** Pretty-printed config.json text with integral values of float-typed keys written as `10000.0`. */
export function hfConfigJson(config: Record<string, unknown>): string {
  const text = JSON.stringify(
    config,
    (key, value) => (FLOAT_KEYS.has(key) && typeof value === 'number' && Number.isInteger(value) ? `${MARK}${value}` : value),
    2,
  );
  return `${text.replace(/"\\u0000float:(-?\d+)"/g, '$1.0')}\n`;
}
