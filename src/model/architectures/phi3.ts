// Phi-3 / Phi-3.5 / Phi-4-mini: q, k and v stored as one qkv_proj ([q; k; v] rows) and gate and up as one gate_up_proj
// ([gate; up]), served to every pass as their parts; partial_rotary_factor (Phi-4-mini turns 96 of 128 dims); longrope;
// sliding_window on every layer, as Hugging Face's Phi3Model masks (keys in (p - sliding_window, p], Mistral's window).
import { rotaryDimOf, uniformBiases, type DecoderSpec, type RopeScaling } from '../../core/spec.js';
import { ConfigReader, type Json } from '../../formats/hf-config.js';
import type { Architecture } from './architecture.js';

const LONGROPE_KEYS = [
  'type',
  'rope_type',
  'short_factor',
  'long_factor',
  'factor',
  'attention_factor',
  'original_max_position_embeddings',
  'rope_theta',
];

/** rotaryDim from partial_rotary_factor: int(head_dim * factor) as Hugging Face takes it, even for rotate-half. */
function rotaryDim(cfg: ConfigReader, headDim: number): number {
  const factor = cfg.num('partial_rotary_factor', 1);
  const dim = Math.floor(headDim * factor);
  if (!(factor > 0 && factor <= 1) || dim < 2 || dim % 2 !== 0) {
    cfg.fail(
      'partial_rotary_factor',
      `${factor} is not supported (it must turn an even number of head_dim ${headDim}'s dims, 0 < factor <= 1)`,
    );
  }
  return dim;
}

/** A per-frequency factor list of rope_scaling. */
function factors(cfg: ConfigReader, r: Json, key: string, count: number): number[] {
  const v = r[key];
  if (!Array.isArray(v) || v.length !== count || v.some((x) => typeof x !== 'number' || !Number.isFinite(x) || x <= 0)) {
    cfg.fail(
      `rope_scaling.${key}`,
      `must be a list of ${count} positive numbers (rotary dims / 2), found ${JSON.stringify(v)?.slice(0, 80)}`,
    );
  }
  return v as number[];
}

/**
 * rope_scaling for Phi-3: none, or longrope as Hugging Face's _compute_longrope_parameters reads it: with a top-level
 * original_max_position_embeddings the scale is max_position_embeddings over it, and the attention factor, unless given,
 * sqrt(1 + ln(scale) / ln(original)) (1 when scale <= 1).
 */
function ropeScaling(cfg: ConfigReader, base: DecoderSpec, dim: number): { ropeScaling: RopeScaling | null; ropeTheta: number } {
  const raw = cfg.json.rope_scaling;
  if (raw === undefined || raw === null) return { ropeScaling: null, ropeTheta: base.ropeTheta };
  if (typeof raw !== 'object' || Array.isArray(raw)) cfg.fail('rope_scaling', 'must be an object or null');
  const json = raw as Json;
  const r = new ConfigReader(cfg.path, json);
  const type = r.str('rope_type') ?? r.str('type') ?? 'default';
  if (type !== 'longrope' && type !== 'default')
    cfg.fail('rope_scaling', `type "${type}" is not supported for phi3 (supported: default, longrope)`);
  const known = type === 'longrope' ? LONGROPE_KEYS : ['type', 'rope_type', 'rope_theta'];
  const unknown = Object.keys(json).find((k) => !known.includes(k));
  if (unknown !== undefined) cfg.fail(`rope_scaling.${unknown}`, `is not supported for rope type ${type} (supported: ${known.join(', ')})`);
  const ropeTheta = r.num('rope_theta', base.ropeTheta);
  if (type === 'default') return { ropeScaling: null, ropeTheta };
  const top = cfg.json.original_max_position_embeddings;
  const original =
    top !== undefined && top !== null
      ? cfg.int('original_max_position_embeddings')
      : r.int('original_max_position_embeddings', base.maxPositions);
  const scale = top !== undefined && top !== null ? base.maxPositions / original : r.num('factor', base.maxPositions / original);
  const attentionFactor = r.num('attention_factor', scale <= 1 ? 1 : Math.sqrt(1 + Math.log(scale) / Math.log(original)));
  return {
    ropeTheta,
    ropeScaling: {
      type: 'longrope',
      shortFactor: factors(cfg, json, 'short_factor', dim / 2),
      longFactor: factors(cfg, json, 'long_factor', dim / 2),
      originalMaxPositions: original,
      attentionFactor,
    },
  };
}

export const phi3: Architecture = {
  name: 'phi3',
  modelType: 'phi3',
  classes: ['Phi3ForCausalLM'],
  label: 'phi3 (Phi-3, Phi-3.5, Phi-4-mini)',
  ownKeys: ['partial_rotary_factor', 'rope_scaling'],
  differences({ cfg, base }) {
    // Phi-3-mini-4k attends through a window of 2047 (of 4096 positions); the later ones set one at least as long as
    // the context, which masks nothing, so they keep the unwindowed graph.
    const raw = cfg.json.sliding_window;
    const window = raw === undefined || raw === null ? null : cfg.int('sliding_window');
    const dim = rotaryDim(cfg, base.headDim);
    return {
      ...ropeScaling(cfg, base, dim),
      ...(dim < base.headDim ? { rotaryDim: dim } : {}),
      ...(window !== null && window < base.maxPositions ? { slidingWindow: window } : {}),
      // Hugging Face's Phi3 layers have no biases.
      biases: uniformBiases(false, false),
      fusedTensors: [
        { module: 'self_attn.qkv_proj', parts: ['q', 'k', 'v'] },
        { module: 'mlp.gate_up_proj', parts: ['gate', 'up'] },
      ],
    };
  },
  configJson: (spec, { attention_bias, mlp_bias, ...base }) => ({
    ...base,
    partial_rotary_factor: rotaryDimOf(spec) / spec.headDim,
    sliding_window: spec.slidingWindow ?? null,
  }),
};
