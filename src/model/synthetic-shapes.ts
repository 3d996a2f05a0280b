// What `llmopt synth --arch` writes: an architecture with the --hidden/--layers/... knobs, or a named shape (the
// published Qwen3-0.6B and Gemma-3-270M, random weights), resolved to the synthetic writer's spec.
import { InputError } from '../core/errors.js';
import { SYNTHETIC_ARCHITECTURES, type LlamaShape, type SyntheticArchitecture, type SyntheticSpec } from './synthetic.js';

/** The knobs of one synthetic model (the synth command's flags). */
export interface SynthKnobs {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Default hidden / heads. */
  headDim?: number;
  /** Default 8/3 hidden, rounded up to 256. */
  ffn?: number;
  vocab: number;
  context: number;
  dtype: LlamaShape['torch_dtype'];
  tied: boolean;
  /** Gemma 3's sliding window (default 512). */
  slidingWindow?: number;
}

/** The shapes --arch names, with the published config's values (weights random, dtype and context the caller's). */
export const NAMED_SHAPES = {
  'qwen3-0.6b': {
    architecture: 'qwen3',
    knobs: { hidden: 1024, layers: 28, heads: 16, kvHeads: 8, headDim: 128, ffn: 3072, vocab: 151936, tied: true },
    context: 40960,
  },
  'gemma-3-270m': {
    architecture: 'gemma3',
    knobs: { hidden: 640, layers: 18, heads: 4, kvHeads: 1, headDim: 256, ffn: 2048, vocab: 262144, tied: true, slidingWindow: 512 },
    context: 32768,
  },
} as const satisfies Record<string, { architecture: SyntheticArchitecture; knobs: Partial<SynthKnobs>; context: number }>;
export type NamedShape = keyof typeof NAMED_SHAPES;

/** What --arch takes: an architecture (shaped by the flags) or a named shape. */
export const SYNTH_ARCHES = [...SYNTHETIC_ARCHITECTURES, ...(Object.keys(NAMED_SHAPES) as NamedShape[])] as const;
export type SynthArch = (typeof SYNTH_ARCHES)[number];

/** The flags a named shape fixes (a named shape refuses them; --dtype and --context stay free). */
export const SHAPE_FLAGS: Record<keyof SynthKnobs, string | null> = {
  hidden: '--hidden',
  layers: '--layers',
  heads: '--heads',
  kvHeads: '--kv-heads',
  headDim: '--head-dim',
  ffn: '--ffn',
  vocab: '--vocab',
  tied: '--tied',
  slidingWindow: '--sliding-window',
  context: null,
  dtype: null,
};

export const defaultFfn = (hidden: number) => Math.ceil((hidden * 8) / 3 / 256) * 256;

/**
 * The writer's spec for `arch` and the knobs, and the options llmopt.json records. `--arch llama` gives exactly
 * what synth wrote before --arch existed (same name, hence the same seeds and bytes, same config and options).
 */
export function synthSpec(arch: SynthArch, given: SynthKnobs): { spec: SyntheticSpec; options: Record<string, unknown> } {
  const named = arch in NAMED_SHAPES ? NAMED_SHAPES[arch as NamedShape] : null;
  const architecture: SyntheticArchitecture = named ? named.architecture : (arch as SyntheticArchitecture);
  const k: SynthKnobs = named ? { ...given, ...named.knobs } : given;
  if (k.slidingWindow !== undefined && architecture !== 'gemma3')
    throw new InputError(`--sliding-window: only gemma3 writes a sliding window (--arch ${arch})`);
  const ffn = k.ffn ?? defaultFfn(k.hidden);
  const { hidden, layers, heads, kvHeads, vocab, context, dtype, tied, headDim } = k;
  if (headDim === undefined && hidden % heads !== 0)
    throw new InputError(`--hidden ${hidden} is not a multiple of --heads ${heads}; give --head-dim`);
  if (heads % kvHeads !== 0) throw new InputError(`--heads ${heads} is not a multiple of --kv-heads ${kvHeads}`);
  const llama = architecture === 'llama';
  // Seeds come from the name, so one name means one model per shape.
  const name = llama
    ? `synth-h${hidden}-l${layers}-a${heads}-kv${kvHeads}${headDim === undefined ? '' : `-d${headDim}`}-f${ffn}-v${vocab}`
    : `synth-${architecture}-h${hidden}-l${layers}-a${heads}-kv${kvHeads}-d${headDim ?? hidden / heads}-f${ffn}-v${vocab}`;
  const config: LlamaShape = {
    hidden_size: hidden,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    ...(headDim === undefined ? {} : { head_dim: headDim }),
    intermediate_size: ffn,
    vocab_size: vocab,
    max_position_embeddings: context,
    // The published configs': Llama 2's base and epsilon, Qwen's and Gemma 3's (global layers) 1e6 and 1e-6.
    rope_theta: llama ? 10000 : 1000000,
    rope_scaling: null,
    rms_norm_eps: llama ? 1e-5 : 1e-6,
    tie_word_embeddings: tied,
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: dtype,
    ...(architecture === 'gemma3'
      ? { sliding_window: k.slidingWindow ?? 512, sliding_window_pattern: 6, rope_local_base_freq: 10000 }
      : {}),
  };
  const options: Record<string, unknown> = llama
    ? { name, hidden, layers, heads, kvHeads, ...(headDim === undefined ? {} : { headDim }), ffn, vocab, context, dtype, tied }
    : { arch, name, hidden, layers, heads, kvHeads, headDim: headDim ?? hidden / heads, ffn, vocab, context, dtype, tied };
  if (architecture === 'gemma3') options.slidingWindow = config.sliding_window;
  return { spec: { name, shards: 1, config, architecture }, options };
}
