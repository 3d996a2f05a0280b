// Qwen3: RMSNorm over head_dim on every query and key head (self_attn.q_norm, k_norm) before the rotary
// embedding; head_dim is its own key (the baseline reads it); attention_bias covers q, k, v and o as in Llama.
import { refuseSlidingWindow, type Architecture } from './architecture.js';

export const qwen3: Architecture = {
  name: 'qwen3',
  modelType: 'qwen3',
  classes: ['Qwen3ForCausalLM'],
  label: 'qwen3 (dense; without sliding window)',
  differences({ cfg }) {
    refuseSlidingWindow(cfg);
    return { qkNorm: true };
  },
  configJson: (_spec, { mlp_bias, ...base }) => ({ ...base, use_sliding_window: false, sliding_window: null }),
};
