// Mistral: a Llama whose layers may attend through a sliding window, which llmopt does not build yet.
import { InputError } from '../../core/errors.js';
import type { Architecture } from './architecture.js';

export const mistral: Architecture = {
  name: 'mistral',
  modelType: 'mistral',
  classes: ['MistralForCausalLM'],
  label: 'mistral (without sliding window)',
  differences({ cfg }) {
    const window = cfg.json.sliding_window;
    if (window !== undefined && window !== null) {
      throw new InputError(
        `${cfg.path}: mistral with sliding_window ${JSON.stringify(window)} is not supported (supported: sliding_window null)`,
      );
    }
    return {};
  },
};
