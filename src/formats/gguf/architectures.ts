// llama.cpp's names for each architecture llmopt reads, one table per architecture and usable both ways:
// GGUF tensor name <-> Hugging Face tensor name(s), the invertible layout change between them (the q/k row
// permutation of llama.cpp's `llama`, Gemma's stored 1 + w norms, Phi-3's fused rows), and metadata key <-> spec field.
// Facts learnt from llama.cpp's convert_hf_to_gguf.py and gguf-py; what llama.cpp cannot represent is refused here.
import { InputError } from '../../core/errors.js';
import { layerHasRope, layerWindow, type DecoderSpec, type Projection } from '../../core/spec.js';
import type { GgufScalar, GgufScalarType } from './file.js';

/**
 * How a stored GGUF tensor differs from its Hugging Face tensor(s). `rope-permute`: llama.cpp's `llama` architecture
 * rotates interleaved pairs, Hugging Face rotates halves, so each head's rows [0, d/2) and [d/2, d) are interleaved.
 * `add`: stored = hf + value (Gemma's RMSNorm scales by 1 + w; llama.cpp's converter stores 1 + w).
 */
export type GgufTransform = { kind: 'rope-permute'; heads: 'q' | 'k' } | { kind: 'add'; value: number };

/**
 * One tensor rule: a GGUF name (after `blk.N.` for layer rules) and the Hugging Face module(s) it holds, relative to
 * `model.layers.N.` for layer rules. Several modules: their rows stacked in order (Phi-3's attn_qkv = [q; k; v]).
 */
export interface GgufTensorRule {
  gguf: string;
  hf: readonly string[];
  transform?: GgufTransform;
}

/** One hyperparameter: its key after `<arch>.` (or a full `general.` key), its GGUF type, how it is written and read. */
export interface GgufMetadataField {
  key: string;
  type: GgufScalarType;
  /** The value for a spec, or undefined when the key is not written for it. */
  write: (spec: DecoderSpec, ctx: GgufWriteContext) => GgufScalar | undefined;
  /** Sets what the value says on a spec being read back (the reader's direction); absent: the key carries nothing to read. */
  read?: (value: GgufScalar, into: Partial<DecoderSpec>) => void;
}

/** What the writer knows beyond the spec: the keys config.json names (llama.cpp's converter writes some only then). */
export interface GgufWriteContext {
  configKeys: ReadonlySet<string>;
  fileType: number;
}

export interface GgufArchitecture {
  /** llama.cpp's architecture name (`general.architecture`, the metadata key prefix). */
  gguf: string;
  /** llmopt's architecture names (DecoderSpec.architecture) written as this one. */
  llmopt: readonly string[];
  /** Tensors outside the layers (token_embd, output_norm, output when not tied). */
  globals: readonly GgufTensorRule[];
  /** Tensors of layer N, named `blk.N.<gguf>.weight|bias`. */
  layer: readonly GgufTensorRule[];
  /** Hyperparameters in llama.cpp's converter's order (`general.file_type` where it writes it). */
  metadata: readonly GgufMetadataField[];
  /** Why llama.cpp's architecture cannot hold this spec, or null. */
  unsupported: (spec: DecoderSpec) => string | null;
  /**
   * tokenizer.ggml.add_space_prefix as the converter writes it: `config`, tokenizer_config.json's add_prefix_space
   * (Llama, SmolLM3); `false`, always false (Gemma 2); absent, not written (llama.cpp's default for the tokenizer).
   */
  spacePrefix?: 'config' | false;
}

const u32 = (key: string, get: (s: DecoderSpec) => number | undefined, set?: (v: number, into: Partial<DecoderSpec>) => void) =>
  ({ key, type: 'u32', write: (s) => get(s), read: set && ((v, into) => set(Number(v), into)) }) satisfies GgufMetadataField;
const f32 = (key: string, get: (s: DecoderSpec) => number | undefined, set?: (v: number, into: Partial<DecoderSpec>) => void) =>
  ({ key, type: 'f32', write: (s) => get(s), read: set && ((v, into) => set(Number(v), into)) }) satisfies GgufMetadataField;

/** Metadata fields shared by the architectures, by what they describe. */
export const FIELDS = {
  blockCount: u32(
    'block_count',
    (s) => s.numLayers,
    (v, o) => (o.numLayers = v),
  ),
  contextLength: u32(
    'context_length',
    (s) => s.maxPositions,
    (v, o) => (o.maxPositions = v),
  ),
  embeddingLength: u32(
    'embedding_length',
    (s) => s.hiddenSize,
    (v, o) => (o.hiddenSize = v),
  ),
  feedForwardLength: u32(
    'feed_forward_length',
    (s) => s.intermediateSize,
    (v, o) => (o.intermediateSize = v),
  ),
  headCount: u32(
    'attention.head_count',
    (s) => s.numHeads,
    (v, o) => (o.numHeads = v),
  ),
  headCountKv: u32(
    'attention.head_count_kv',
    (s) => s.kvHeads,
    (v, o) => (o.kvHeads = v),
  ),
  ropeFreqBase: f32(
    'rope.freq_base',
    (s) => s.ropeTheta,
    (v, o) => (o.ropeTheta = v),
  ),
  ropeFreqBaseSwa: f32(
    'rope.freq_base_swa',
    (s) => s.localRopeTheta,
    (v, o) => (o.localRopeTheta = v),
  ),
  rmsEps: f32(
    'attention.layer_norm_rms_epsilon',
    (s) => s.rmsNormEps,
    (v, o) => (o.rmsNormEps = v),
  ),
  /** Written by the converter when config.json names head_dim (and always for Gemma). */
  keyLength: u32(
    'attention.key_length',
    (s) => s.headDim,
    (v, o) => (o.headDim = v),
  ),
  valueLength: u32('attention.value_length', (s) => s.headDim),
  vocabSize: u32(
    'vocab_size',
    (s) => s.vocabSize,
    (v, o) => (o.vocabSize = v),
  ),
  ropeDimensionCount: u32(
    'rope.dimension_count',
    (s) => s.rotaryDim ?? s.headDim,
    (v, o) => (o.rotaryDim = v),
  ),
  /** Linear rope scaling (the converter writes rope.scaling.type and factor for rope_type linear only). */
  ropeScalingType: {
    key: 'rope.scaling.type',
    type: 'string',
    write: (s) => (s.ropeScaling?.type === 'linear' ? 'linear' : undefined),
  } satisfies GgufMetadataField,
  ropeScalingFactor: f32(
    'rope.scaling.factor',
    (s) => (s.ropeScaling?.type === 'linear' ? s.ropeScaling.factor : undefined),
    (v, o) => (o.ropeScaling = { type: 'linear', factor: v }),
  ),
  slidingWindow: u32(
    'attention.sliding_window',
    (s) => s.slidingWindow,
    (v, o) => (o.slidingWindow = v),
  ),
  attnSoftcap: f32(
    'attn_logit_softcapping',
    (s) => s.attnSoftcap,
    (v, o) => (o.attnSoftcap = v),
  ),
  finalSoftcap: f32(
    'final_logit_softcapping',
    (s) => s.finalSoftcap,
    (v, o) => (o.finalSoftcap = v),
  ),
  fileType: { key: 'general.file_type', type: 'u32', write: (_s, ctx) => ctx.fileType } satisfies GgufMetadataField,
} as const;

/** A field written only when `when` holds. */
const only = (field: GgufMetadataField, when: (s: DecoderSpec, ctx: GgufWriteContext) => boolean): GgufMetadataField => ({
  ...field,
  write: (s, ctx) => (when(s, ctx) ? field.write(s, ctx) : undefined),
});
const namesHeadDim = (_s: DecoderSpec, ctx: GgufWriteContext) => ctx.configKeys.has('head_dim');

const GLOBALS: GgufTensorRule[] = [
  { gguf: 'token_embd', hf: ['model.embed_tokens'] },
  { gguf: 'output_norm', hf: ['model.norm'] },
  { gguf: 'output', hf: ['lm_head'] },
];

const ATTENTION: GgufTensorRule[] = [
  { gguf: 'attn_q', hf: ['self_attn.q_proj'] },
  { gguf: 'attn_k', hf: ['self_attn.k_proj'] },
  { gguf: 'attn_v', hf: ['self_attn.v_proj'] },
  { gguf: 'attn_output', hf: ['self_attn.o_proj'] },
];
const MLP: GgufTensorRule[] = [
  { gguf: 'ffn_gate', hf: ['mlp.gate_proj'] },
  { gguf: 'ffn_up', hf: ['mlp.up_proj'] },
  { gguf: 'ffn_down', hf: ['mlp.down_proj'] },
];
const PRE_NORMS: GgufTensorRule[] = [
  { gguf: 'attn_norm', hf: ['input_layernorm'] },
  { gguf: 'ffn_norm', hf: ['post_attention_layernorm'] },
];
const QK_NORMS: GgufTensorRule[] = [
  { gguf: 'attn_q_norm', hf: ['self_attn.q_norm'] },
  { gguf: 'attn_k_norm', hf: ['self_attn.k_norm'] },
];

/** Llama-family layers: q and k permuted to llama.cpp's interleaved rotary pairs. */
const PERMUTED_ATTENTION: GgufTensorRule[] = ATTENTION.map((r) =>
  r.gguf === 'attn_q' || r.gguf === 'attn_k' ? { ...r, transform: { kind: 'rope-permute', heads: r.gguf === 'attn_q' ? 'q' : 'k' } } : r,
);

const GEMMA_NORM = { kind: 'add', value: 1 } as const;
/** Gemma 2/3: four norms per layer (llama.cpp's ffn_norm is Gemma's pre_feedforward_layernorm), all stored as 1 + w. */
const GEMMA_LAYER: GgufTensorRule[] = [
  { gguf: 'attn_norm', hf: ['input_layernorm'], transform: GEMMA_NORM },
  { gguf: 'post_attention_norm', hf: ['post_attention_layernorm'], transform: GEMMA_NORM },
  { gguf: 'ffn_norm', hf: ['pre_feedforward_layernorm'], transform: GEMMA_NORM },
  { gguf: 'post_ffw_norm', hf: ['post_feedforward_layernorm'], transform: GEMMA_NORM },
  ...ATTENTION,
  ...MLP,
];
const GEMMA_GLOBALS: GgufTensorRule[] = GLOBALS.map((r) => (r.gguf === 'output_norm' ? { ...r, transform: GEMMA_NORM } : r));

/** Why a spec with biases llama.cpp's architecture does not load cannot be written, or null. */
function biasesBeyond(spec: DecoderSpec, allowed: readonly Projection[]): string | null {
  const extra = (Object.keys(spec.biases) as Projection[]).filter((p) => spec.biases[p] && !allowed.includes(p));
  return extra.length > 0 ? `llama.cpp's architecture has no ${extra.map((p) => `${p}_proj`).join(', ')} bias` : null;
}

/** The layers llama.cpp's fixed pattern makes sliding (or rotary-free), compared with the spec's. */
function patternMismatch(spec: DecoderSpec, what: string, expected: (i: number) => boolean, actual: (i: number) => boolean) {
  for (let i = 0; i < spec.numLayers; i++) {
    if (expected(i) !== actual(i)) return `llama.cpp fixes ${what}, which layer ${i} does not follow`;
  }
  return null;
}

/** llama.cpp scales attention by 1/sqrt(head_dim) (Gemma's query_pre_attn_scalar is read only for Gemma 27B shapes). */
function customAttentionScale(spec: DecoderSpec): string | null {
  if (spec.attentionScale === undefined) return null;
  const expected = 1 / Math.sqrt(spec.headDim);
  return Math.abs(spec.attentionScale - expected) > 1e-6 * expected
    ? `query_pre_attn_scalar ${(1 / spec.attentionScale ** 2).toFixed(0)} differs from head_dim ${spec.headDim}, which llama.cpp uses`
    : null;
}

const llamaMetadata: GgufMetadataField[] = [
  FIELDS.blockCount,
  FIELDS.contextLength,
  FIELDS.embeddingLength,
  FIELDS.feedForwardLength,
  FIELDS.headCount,
  FIELDS.headCountKv,
  FIELDS.ropeScalingType,
  FIELDS.ropeScalingFactor,
  FIELDS.ropeFreqBase,
  FIELDS.rmsEps,
  only(FIELDS.keyLength, namesHeadDim),
  only(FIELDS.valueLength, namesHeadDim),
  FIELDS.fileType,
  FIELDS.vocabSize,
  FIELDS.ropeDimensionCount,
];

/** Llama 1-3.x and Mistral (llama.cpp's converter writes Hugging Face's MistralForCausalLM as `llama`). */
export const LLAMA: GgufArchitecture = {
  gguf: 'llama',
  llmopt: ['llama', 'mistral'],
  globals: GLOBALS,
  layer: [...PRE_NORMS, ...PERMUTED_ATTENTION, ...MLP],
  metadata: llamaMetadata,
  spacePrefix: 'config',
  unsupported: (spec) => {
    if (spec.slidingWindow !== undefined && spec.slidingWindow < spec.maxPositions) {
      const window = `sliding_window ${spec.slidingWindow} is shorter than the context ${spec.maxPositions}`;
      return `${window}: llama.cpp's llama architecture has no sliding window`;
    }
    return biasesBeyond(spec, ['q', 'k', 'v', 'o', 'gate', 'up', 'down']);
  },
};

const qwenMetadata = (headLengths: boolean): GgufMetadataField[] => [
  FIELDS.blockCount,
  FIELDS.contextLength,
  FIELDS.embeddingLength,
  FIELDS.feedForwardLength,
  FIELDS.headCount,
  FIELDS.headCountKv,
  FIELDS.ropeScalingType,
  FIELDS.ropeScalingFactor,
  FIELDS.ropeFreqBase,
  FIELDS.rmsEps,
  ...(headLengths ? [only(FIELDS.keyLength, namesHeadDim), only(FIELDS.valueLength, namesHeadDim)] : []),
  FIELDS.fileType,
];

const noWindow = (spec: DecoderSpec) =>
  spec.slidingWindow !== undefined && spec.slidingWindow < spec.maxPositions
    ? `sliding_window ${spec.slidingWindow}: llama.cpp's architecture has no sliding window`
    : null;

export const QWEN2: GgufArchitecture = {
  gguf: 'qwen2',
  llmopt: ['qwen2'],
  globals: GLOBALS,
  layer: [...PRE_NORMS, ...ATTENTION, ...MLP],
  metadata: qwenMetadata(true),
  unsupported: (spec) => noWindow(spec) ?? biasesBeyond(spec, ['q', 'k', 'v']),
};

export const QWEN3: GgufArchitecture = {
  gguf: 'qwen3',
  llmopt: ['qwen3'],
  globals: GLOBALS,
  layer: [...PRE_NORMS, ...ATTENTION, ...QK_NORMS, ...MLP],
  metadata: qwenMetadata(true),
  unsupported: (spec) => noWindow(spec) ?? biasesBeyond(spec, []),
};

/** SmolLM3: llama.cpp's converter writes it as a Llama (q/k permuted); llama.cpp leaves every fourth layer without rotary. */
export const SMOLLM3: GgufArchitecture = {
  gguf: 'smollm3',
  llmopt: ['smollm3'],
  globals: GLOBALS,
  layer: [...PRE_NORMS, ...PERMUTED_ATTENTION, ...MLP],
  metadata: llamaMetadata,
  spacePrefix: 'config',
  unsupported: (spec) =>
    noWindow(spec) ??
    biasesBeyond(spec, []) ??
    patternMismatch(
      spec,
      'rotary on every layer but each fourth (no_rope_layer_interval 4)',
      (i) => (i + 1) % 4 !== 0,
      (i) => layerHasRope(spec, i),
    ),
};

/** Phi-3 / Phi-4-mini: fused qkv and gate_up rows, partial rotary, longrope factor tensors. */
export const PHI3: GgufArchitecture = {
  gguf: 'phi3',
  llmopt: ['phi3'],
  globals: GLOBALS,
  layer: [
    { gguf: 'attn_norm', hf: ['input_layernorm'] },
    { gguf: 'ffn_norm', hf: ['post_attention_layernorm'] },
    { gguf: 'attn_qkv', hf: ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'] },
    { gguf: 'attn_output', hf: ['self_attn.o_proj'] },
    { gguf: 'ffn_up', hf: ['mlp.gate_proj', 'mlp.up_proj'] },
    { gguf: 'ffn_down', hf: ['mlp.down_proj'] },
  ],
  metadata: [
    FIELDS.contextLength,
    u32('rope.scaling.original_context_length', (s) =>
      s.ropeScaling?.type === 'longrope' ? s.ropeScaling.originalMaxPositions : s.maxPositions,
    ),
    FIELDS.embeddingLength,
    FIELDS.feedForwardLength,
    FIELDS.blockCount,
    FIELDS.headCount,
    FIELDS.headCountKv,
    FIELDS.rmsEps,
    FIELDS.ropeDimensionCount,
    FIELDS.ropeFreqBase,
    FIELDS.fileType,
    // 0 tells llama.cpp there is no window (the converter's way of telling Phi-4 from other Phi-3 models).
    u32(
      'attention.sliding_window',
      (s) => s.slidingWindow ?? 0,
      (v, o) => (o.slidingWindow = v > 0 ? v : undefined),
    ),
  ],
  unsupported: (spec) => {
    if (spec.headDim * spec.numHeads !== spec.hiddenSize) return `head_dim ${spec.headDim} x heads is not hidden_size (llama.cpp's phi3)`;
    return biasesBeyond(spec, []);
  },
};

/** Phi-3 longrope's cos/sin scale as llama.cpp's converter computes it (rope.scaling.attn_factor). */
export function phi3AttnFactor(spec: DecoderSpec): number | undefined {
  if (spec.ropeScaling?.type !== 'longrope') return undefined;
  const scale = spec.maxPositions / spec.ropeScaling.originalMaxPositions;
  return scale > 1 ? Math.sqrt(1 + Math.log(scale) / Math.log(spec.ropeScaling.originalMaxPositions)) : 1;
}

const gemmaUnsupported = (spec: DecoderSpec, pattern: number, activation = true) =>
  customAttentionScale(spec) ??
  biasesBeyond(spec, []) ??
  (activation && spec.activation !== 'gelu_tanh' ? "llama.cpp's Gemma uses tanh-GELU" : null) ??
  patternMismatch(
    spec,
    `a sliding window on all layers but each ${pattern === 2 ? 'second' : 'sixth'}`,
    (i) => i % pattern < pattern - 1,
    (i) => layerWindow(spec, i) !== null,
  );

export const GEMMA2: GgufArchitecture = {
  gguf: 'gemma2',
  llmopt: ['gemma2'],
  globals: GEMMA_GLOBALS,
  layer: GEMMA_LAYER,
  metadata: [
    FIELDS.contextLength,
    FIELDS.embeddingLength,
    FIELDS.blockCount,
    FIELDS.feedForwardLength,
    FIELDS.headCount,
    FIELDS.headCountKv,
    FIELDS.rmsEps,
    FIELDS.keyLength,
    FIELDS.valueLength,
    FIELDS.fileType,
    FIELDS.attnSoftcap,
    FIELDS.finalSoftcap,
    FIELDS.slidingWindow,
    // Not written by llama.cpp's converter (llama.cpp's default base is 10000): written only when it differs.
    only(FIELDS.ropeFreqBase, (s) => s.ropeTheta !== 10000),
  ],
  unsupported: (spec) => gemmaUnsupported(spec, 2),
  spacePrefix: false,
};

export const GEMMA3: GgufArchitecture = {
  gguf: 'gemma3',
  llmopt: ['gemma3'],
  globals: GEMMA_GLOBALS,
  layer: [...GEMMA_LAYER.slice(0, 4), ...ATTENTION, ...QK_NORMS.map((r) => ({ ...r, transform: GEMMA_NORM })), ...MLP],
  metadata: [
    FIELDS.blockCount,
    FIELDS.contextLength,
    FIELDS.embeddingLength,
    FIELDS.feedForwardLength,
    FIELDS.headCount,
    FIELDS.headCountKv,
    FIELDS.ropeScalingType,
    FIELDS.ropeScalingFactor,
    FIELDS.ropeFreqBase,
    FIELDS.ropeFreqBaseSwa,
    FIELDS.rmsEps,
    FIELDS.keyLength,
    FIELDS.valueLength,
    FIELDS.fileType,
    FIELDS.finalSoftcap,
    FIELDS.slidingWindow,
  ],
  unsupported: (spec) => (spec.attnSoftcap !== undefined ? 'attn_logit_softcapping (Gemma 3 has none)' : gemmaUnsupported(spec, 6)),
};

export const GGUF_ARCHITECTURES: readonly GgufArchitecture[] = [LLAMA, QWEN2, QWEN3, SMOLLM3, PHI3, GEMMA2, GEMMA3];

/** The llama.cpp architecture a spec is written as; refuses, in one line, what llama.cpp cannot hold. */
export function ggufArchitectureOf(spec: DecoderSpec): GgufArchitecture {
  const arch = GGUF_ARCHITECTURES.find((a) => a.llmopt.includes(spec.architecture));
  if (!arch) {
    const known = GGUF_ARCHITECTURES.flatMap((a) => a.llmopt).join(', ');
    throw new InputError(`GGUF: llmopt has no llama.cpp architecture for "${spec.architecture}" (it writes ${known})`);
  }
  const why = arch.unsupported(spec);
  if (why) throw new InputError(`GGUF: this ${spec.architecture} model cannot be written for llama.cpp: ${why}`);
  return arch;
}

/** The architecture a GGUF file names (the reader's direction), or undefined. */
export const ggufArchitectureNamed = (name: string): GgufArchitecture | undefined => GGUF_ARCHITECTURES.find((a) => a.gguf === name);

// The layout half of the table lives in layout.ts; its names are exported from here too.
export {
  fromGgufLayout,
  ggufRowOrder,
  ggufTensorPlan,
  llama3RopeFactors,
  partRows,
  toGgufLayout,
  type GgufTensorEntry,
} from './layout.js';
