// SmolLM3: a Llama whose `no_rope_layers` (1: the layer applies the rotary embedding, 0: it does not, as in
// Hugging Face's SmolLM3Attention.use_rope) leaves every no_rope_layer_interval-th layer without rotary.
import { refuseSlidingWindow, layerFlags, type Architecture } from './architecture.js';

export const smollm3: Architecture = {
  name: 'smollm3',
  modelType: 'smollm3',
  classes: ['SmolLM3ForCausalLM'],
  label: 'smollm3 (without sliding window)',
  differences({ cfg, base }) {
    refuseSlidingWindow(cfg);
    const types = cfg.json.layer_types;
    if (Array.isArray(types) && types.some((t) => t !== 'full_attention')) {
      cfg.fail('layer_types', `${JSON.stringify(types)} is not supported (supported: full_attention on every layer)`);
    }
    if (cfg.json.no_rope_layers !== undefined && cfg.json.no_rope_layers !== null) {
      return { ropeLayers: layerFlags(cfg, 'no_rope_layers', base.numLayers) };
    }
    // Without the list, Hugging Face's SmolLM3Config derives it from the interval.
    const interval = cfg.int('no_rope_layer_interval', 4);
    return { ropeLayers: Array.from({ length: base.numLayers }, (_, i) => (i + 1) % interval !== 0) };
  },
  configJson: (spec, base) => ({
    ...base,
    use_sliding_window: false,
    no_rope_layers: (spec.ropeLayers ?? Array(spec.numLayers).fill(true)).map((r) => (r ? 1 : 0)),
  }),
};
