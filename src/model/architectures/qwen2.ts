// Qwen2 / Qwen2.5: biases on q, k and v but not on o_proj (hard-wired in Hugging Face's Qwen2Attention; there is
// no attention_bias key), read per projection from the tensors present.
import { uniformBiases } from '../../core/spec.js';
import { biasesFromTensors, refuseSlidingWindow, type Architecture } from './architecture.js';

export const qwen2: Architecture = {
  name: 'qwen2',
  modelType: 'qwen2',
  classes: ['Qwen2ForCausalLM'],
  label: 'qwen2 (Qwen2, Qwen2.5; without sliding window)',
  differences({ cfg, tensors }) {
    refuseSlidingWindow(cfg);
    return { biases: biasesFromTensors(tensors, { ...uniformBiases(true, false), o: false }) };
  },
  // No bias keys (the tensors say which projections have one) and no sliding window.
  configJson: (_spec, { attention_bias, mlp_bias, ...base }) => ({ ...base, use_sliding_window: false, sliding_window: null }),
};
