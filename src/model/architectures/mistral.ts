// Mistral: a Llama whose layers all attend through a sliding window when config.json sets sliding_window
// (a query at position p sees keys in (p - sliding_window, p], as Hugging Face's mask does); null: the whole context.
import type { Architecture } from './architecture.js';

export const mistral: Architecture = {
  name: 'mistral',
  modelType: 'mistral',
  classes: ['MistralForCausalLM'],
  differences({ cfg }) {
    const window = cfg.json.sliding_window;
    if (window === undefined || window === null) return {};
    return { slidingWindow: cfg.int('sliding_window') };
  },
  configJson: (spec, base) => ({ ...base, sliding_window: spec.slidingWindow ?? null }),
};
