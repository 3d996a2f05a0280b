// Llama (2, 3.x; TinyLlama, SmolLM, SmolLM2): the baseline itself (formats/hf-config.ts llamaBaseSpec).
import type { Architecture } from './architecture.js';

export const llama: Architecture = {
  name: 'llama',
  modelType: 'llama',
  classes: ['LlamaForCausalLM'],
  differences: () => ({}),
};
