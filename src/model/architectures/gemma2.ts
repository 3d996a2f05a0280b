// Gemma 2: the Gemma body (gemma.ts) with attention-logit and final-logit soft-capping (50 and 30 unless the
// config says otherwise) and sliding and global layers alternating, the even ones sliding; one rotary base.
import { gemmaConfigJson, gemmaDifferences, slidingLayers } from './gemma.js';
import type { Architecture } from './architecture.js';

export const gemma2: Architecture = {
  name: 'gemma2',
  modelType: 'gemma2',
  classes: ['Gemma2ForCausalLM'],
  ownKeys: ['hidden_act'],
  differences({ cfg, base }) {
    return {
      ...gemmaDifferences(cfg, base, { attn: 50, final: 30 }),
      slidingLayers: slidingLayers(cfg, base.numLayers, (i) => i % 2 === 0),
    };
  },
  configJson: gemmaConfigJson,
};
