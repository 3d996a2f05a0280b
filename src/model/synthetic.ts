// Deterministic random checkpoints in Hugging Face layout (config, safetensors, a small SentencePiece-style
// tokenizer) of Llama, Qwen2, Qwen3 or Gemma 3 text: the test fixtures and the synthetic models benchmarks run on.
// Every tensor is seeded from its own name, so values do not depend on generation order or size.
import { promises as fs, readdirSync, renameSync, rmdirSync } from 'node:fs';
import * as path from 'node:path';
import { fromFloat32 } from '../formats/dtype.js';
import { passRecord } from '../formats/manifest.js';
import { writeModelFolder } from '../formats/model-folder.js';
import { writeSafetensors, writeShardedCheckpoint, type TensorEntry } from '../formats/safetensors.js';

/** The architecture knobs of one synthetic model; names follow Hugging Face's LlamaConfig. */
export interface LlamaShape {
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim?: number;
  intermediate_size: number;
  vocab_size: number;
  max_position_embeddings: number;
  rope_theta: number;
  rope_scaling: Record<string, unknown> | null;
  rms_norm_eps: number;
  tie_word_embeddings: boolean;
  attention_bias: boolean;
  mlp_bias: boolean;
  torch_dtype: 'float32' | 'float16' | 'bfloat16';
  /** Gemma 3 only: the window of its sliding layers (default 512). */
  sliding_window?: number;
  /** Gemma 3 only: every sliding_window_pattern-th layer is global (default 6: five sliding to one global). */
  sliding_window_pattern?: number;
  /** Gemma 3 only: attention scales by query_pre_attn_scalar^-0.5 (default head_dim). */
  query_pre_attn_scalar?: number;
  /** Gemma 3 only: the rotary base of sliding layers (default 10000; rope_theta is the global layers'). */
  rope_local_base_freq?: number;
}

/** The architectures the synthetic writer knows: the tensors and config.json keys each adds to the Llama layout. */
export const SYNTHETIC_ARCHITECTURES = ['llama', 'qwen2', 'qwen3', 'gemma3'] as const;
export type SyntheticArchitecture = (typeof SYNTHETIC_ARCHITECTURES)[number];

export interface SyntheticSpec {
  name: string;
  config: LlamaShape;
  /** Split the weights into this many shards through an index; 1 means a single model.safetensors. */
  shards: number;
  /**
   * What to write (default llama). qwen2: biases on q, k and v (the config's attention_bias and mlp_bias are not
   * written); qwen3: q_norm and k_norm; gemma3 (gemma3_text): those and four norms per layer, (1 + w) norms stored near 0.
   */
  architecture?: SyntheticArchitecture;
}

const BOS_ID = 1;
const EOS_ID = 2;

// Large enough that the random model's logits are peaked rather than flat, small enough to stay finite.
const WEIGHT_STD = 0.15;
const NORM_STD = 0.1;
const BIAS_STD = 0.05;

/** 32-bit FNV-1a, to give every tensor its own seed so its values do not depend on generation order. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return hash;
}

/** Standard normal samples from a mulberry32 stream through the Box-Muller transform. */
export function normalSamples(seed: number, count: number): Float32Array {
  let state = seed >>> 0;
  const uniform = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(1 - uniform())); // 1 - u lies in (0, 1], so the log is finite
    const angle = 2 * Math.PI * uniform();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < count) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}

type Init = 'weight' | 'norm' | 'offsetNorm' | 'bias';

/** Tensor names, shapes and initialisation in Hugging Face order (Llama's, with the architecture's extra tensors). */
function checkpointTensors(config: LlamaShape, arch: SyntheticArchitecture): Array<{ name: string; shape: number[]; init: Init }> {
  const hidden = config.hidden_size;
  const gemma = arch === 'gemma3';
  // Gemma's RMSNorms scale by (1 + w): stored weights near 0 give the same scales as Llama's near 1.
  const norm: Init = gemma ? 'offsetNorm' : 'norm';
  const bias = (proj: string): boolean => (arch === 'qwen2' ? proj !== 'o_proj' : arch !== 'gemma3' && config.attention_bias);
  const mlpBias = arch !== 'qwen2' && arch !== 'gemma3' && config.mlp_bias;
  const headDim = config.head_dim ?? hidden / config.num_attention_heads;
  const qOut = config.num_attention_heads * headDim;
  const kvOut = config.num_key_value_heads * headDim;
  const tensors: Array<{ name: string; shape: number[]; init: Init }> = [
    { name: 'model.embed_tokens.weight', shape: [config.vocab_size, hidden], init: 'weight' },
  ];
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const layer = `model.layers.${i}`;
    tensors.push({ name: `${layer}.input_layernorm.weight`, shape: [hidden], init: norm });
    const projections: Array<[string, number, number]> = [
      ['q_proj', qOut, hidden],
      ['k_proj', kvOut, hidden],
      ['v_proj', kvOut, hidden],
      ['o_proj', hidden, qOut],
    ];
    for (const [proj, out, inp] of projections) {
      tensors.push({ name: `${layer}.self_attn.${proj}.weight`, shape: [out, inp], init: 'weight' });
      // Hugging Face's attention_bias puts a bias on o_proj as well as on q, k and v; Qwen2 has q, k and v's only.
      if (bias(proj)) tensors.push({ name: `${layer}.self_attn.${proj}.bias`, shape: [out], init: 'bias' });
    }
    if (arch === 'qwen3' || gemma) {
      tensors.push({ name: `${layer}.self_attn.q_norm.weight`, shape: [headDim], init: norm });
      tensors.push({ name: `${layer}.self_attn.k_norm.weight`, shape: [headDim], init: norm });
    }
    tensors.push({ name: `${layer}.post_attention_layernorm.weight`, shape: [hidden], init: norm });
    if (gemma) {
      tensors.push({ name: `${layer}.pre_feedforward_layernorm.weight`, shape: [hidden], init: norm });
      tensors.push({ name: `${layer}.post_feedforward_layernorm.weight`, shape: [hidden], init: norm });
    }
    const mlp: Array<[string, number, number]> = [
      ['gate_proj', config.intermediate_size, hidden],
      ['up_proj', config.intermediate_size, hidden],
      ['down_proj', hidden, config.intermediate_size],
    ];
    for (const [proj, out, inp] of mlp) {
      tensors.push({ name: `${layer}.mlp.${proj}.weight`, shape: [out, inp], init: 'weight' });
      if (mlpBias) tensors.push({ name: `${layer}.mlp.${proj}.bias`, shape: [out], init: 'bias' });
    }
  }
  tensors.push({ name: 'model.norm.weight', shape: [hidden], init: norm });
  if (!config.tie_word_embeddings) tensors.push({ name: 'lm_head.weight', shape: [config.vocab_size, hidden], init: 'weight' });
  return tensors;
}

function tensorValues(fixture: string, name: string, shape: number[], init: Init): Float32Array {
  const values = normalSamples(
    fnv1a(`${fixture}/${name}`),
    shape.reduce((a, b) => a * b, 1),
  );
  const [scale, offset] = { weight: [WEIGHT_STD, 0], norm: [NORM_STD, 1], offsetNorm: [NORM_STD, 0], bias: [BIAS_STD, 0] }[init];
  for (let i = 0; i < values.length; i++) values[i] = offset + values[i]! * scale;
  return values;
}

// Fields Python writes as floats; JSON.stringify would drop their ".0" and Transformers warns on some of them.
const FLOAT_FIELDS = ['rope_theta', 'rope_local_base_freq', 'factor', 'low_freq_factor', 'high_freq_factor', 'attention_dropout'];

function jsonText(value: unknown): string {
  const text = JSON.stringify(value, null, 2);
  const pattern = new RegExp(`^(\\s*"(?:${FLOAT_FIELDS.join('|')})": -?\\d+)(,?)$`, 'gm');
  return `${text.replace(pattern, '$1.0$2')}\n`;
}

function sortedKeys(record: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : 1)));
}

function llamaConfigJson(config: LlamaShape): Record<string, unknown> {
  return sortedKeys({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    ...config,
    attention_dropout: 0,
    bos_token_id: BOS_ID,
    eos_token_id: EOS_ID,
    hidden_act: 'silu',
    initializer_range: 0.02,
    pretraining_tp: 1,
    use_cache: true,
  });
}

/** Qwen2 and Qwen3's config.json as the published checkpoints write it (Qwen2 has no head_dim or attention_bias key). */
function qwenConfigJson(config: LlamaShape, arch: 'qwen2' | 'qwen3'): Record<string, unknown> {
  const c = config;
  return sortedKeys({
    architectures: [arch === 'qwen2' ? 'Qwen2ForCausalLM' : 'Qwen3ForCausalLM'],
    model_type: arch,
    ...(arch === 'qwen3' ? { attention_bias: c.attention_bias, head_dim: c.head_dim ?? c.hidden_size / c.num_attention_heads } : {}),
    ...shapeKeys(c),
    attention_dropout: 0,
    bos_token_id: BOS_ID,
    eos_token_id: EOS_ID,
    hidden_act: 'silu',
    initializer_range: 0.02,
    max_window_layers: c.num_hidden_layers,
    sliding_window: null,
    use_cache: true,
    use_sliding_window: false,
  });
}

/** Gemma 3 text's config.json as google/gemma-3-270m's: five sliding layers to one global, spelled out in layer_types. */
function gemma3ConfigJson(config: LlamaShape): Record<string, unknown> {
  const c = config;
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  const pattern = c.sliding_window_pattern ?? 6;
  return sortedKeys({
    architectures: ['Gemma3ForCausalLM'],
    model_type: 'gemma3_text',
    ...shapeKeys(c),
    attention_bias: false,
    attention_dropout: 0,
    attn_logit_softcapping: null,
    bos_token_id: BOS_ID,
    eos_token_id: EOS_ID,
    final_logit_softcapping: null,
    head_dim: headDim,
    hidden_activation: 'gelu_pytorch_tanh',
    initializer_range: 0.02,
    layer_types: Array.from({ length: c.num_hidden_layers }, (_, i) => ((i + 1) % pattern === 0 ? 'full_attention' : 'sliding_attention')),
    pad_token_id: 0,
    query_pre_attn_scalar: c.query_pre_attn_scalar ?? headDim,
    rope_local_base_freq: c.rope_local_base_freq ?? 10000,
    sliding_window: c.sliding_window ?? 512,
    sliding_window_pattern: pattern,
    use_bidirectional_attention: false,
    use_cache: true,
  });
}

/** The shape keys every architecture's config.json shares with Llama's. */
function shapeKeys(c: LlamaShape): Record<string, unknown> {
  return {
    hidden_size: c.hidden_size,
    intermediate_size: c.intermediate_size,
    max_position_embeddings: c.max_position_embeddings,
    num_attention_heads: c.num_attention_heads,
    num_hidden_layers: c.num_hidden_layers,
    num_key_value_heads: c.num_key_value_heads,
    rms_norm_eps: c.rms_norm_eps,
    rope_scaling: c.rope_scaling,
    rope_theta: c.rope_theta,
    tie_word_embeddings: c.tie_word_embeddings,
    torch_dtype: c.torch_dtype,
    vocab_size: c.vocab_size,
  };
}

/** The config.json the writer puts beside the weights of `spec`. */
export function syntheticConfigJson(spec: Pick<SyntheticSpec, 'config' | 'architecture'>): Record<string, unknown> {
  const arch = spec.architecture ?? 'llama';
  if (arch === 'qwen2' || arch === 'qwen3') return qwenConfigJson(spec.config, arch);
  if (arch === 'gemma3') return gemma3ConfigJson(spec.config);
  return llamaConfigJson(spec.config);
}

const SPECIAL_TOKENS = ['<unk>', '<s>', '</s>'];
const WORD_START = '\u2581';

// Merges in rank order; every result is a vocabulary entry and so is each of its two parts.
const MERGES: Array<[string, string]> = [
  ['▁', 't'],
  ['h', 'e'],
  ['▁t', 'he'],
  ['i', 'n'],
  ['e', 'r'],
  ['a', 'n'],
  ['▁', 'a'],
  ['o', 'n'],
  ['▁', 's'],
  ['e', 'n'],
  ['a', 't'],
  ['r', 'e'],
  ['o', 'u'],
  ['▁', 'o'],
  ['▁', 'w'],
  ['▁', 'c'],
  ['i', 's'],
  ['o', 'r'],
  ['in', 'g'],
  ['▁', 'b'],
  ['▁', 'm'],
  ['▁', 'f'],
  ['▁', 'h'],
  ['e', 'd'],
  ['▁', 'p'],
  ['i', 't'],
  ['a', 'r'],
  ['▁', 'i'],
  ['▁', 'd'],
  ['▁a', 'n'],
  ['▁an', 'd'],
  ['o', 'm'],
  ['▁o', 'n'],
  ['▁', 'l'],
];

/** A Llama-2-style tokenizer.json: SentencePiece BPE with byte fallback, 320 tokens. */
function tokenizerJson(vocabSize: number): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  const add = (token: string): void => {
    if (token in vocab) throw new Error(`token ${token} added twice`);
    vocab[token] = Object.keys(vocab).length;
  };
  SPECIAL_TOKENS.forEach(add);
  for (let byte = 0; byte < 256; byte++) add(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`);
  add(WORD_START);
  for (let code = 97; code <= 122; code++) add(String.fromCharCode(code));
  for (const [left, right] of MERGES) {
    if (!(left in vocab) || !(right in vocab)) throw new Error(`merge ${left} ${right} uses a token not in the vocabulary`);
    add(left + right);
  }
  // A model may have more embedding rows than tokenizer entries (as padded real vocabularies do), never fewer.
  if (Object.keys(vocab).length > vocabSize) throw new Error(`tokenizer has ${Object.keys(vocab).length} tokens, config says ${vocabSize}`);

  const special = (content: string, id: number) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((token, id) => special(token, id)),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: WORD_START },
        { type: 'Replace', pattern: { String: ' ' }, content: WORD_START },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [BOS_ID], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: WORD_START }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: MERGES,
    },
  };
}

function tokenizerConfigJson(maxLength: number): Record<string, unknown> {
  const decoder = Object.fromEntries(
    SPECIAL_TOKENS.map((content, id) => [
      String(id),
      { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    ]),
  );
  return {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: decoder,
    bos_token: '<s>',
    clean_up_tokenization_spaces: false,
    eos_token: '</s>',
    legacy: false,
    model_max_length: maxLength,
    pad_token: null,
    tokenizer_class: 'LlamaTokenizerFast',
    unk_token: '<unk>',
  };
}

/**
 * Writes one random checkpoint (Hugging Face layout; Llama unless spec.architecture says otherwise) into
 * `<outDir>/<spec.name>`, one tensor at a time, so memory stays near the largest tensor.
 */
export async function writeSyntheticLlama(outDir: string, spec: SyntheticSpec): Promise<void> {
  const dir = path.join(outDir, spec.name);
  await fs.rm(dir, { recursive: true, force: true }); // no stale files from an earlier layout
  await fs.mkdir(dir, { recursive: true });
  const { config } = spec;
  const dtype = ({ float32: 'F32', float16: 'F16', bfloat16: 'BF16' } as const)[config.torch_dtype];
  const arch = spec.architecture ?? 'llama';
  const tensors = checkpointTensors(config, arch);
  const inits = new Map(tensors.map((t) => [t.name, t]));
  const entries: TensorEntry[] = tensors.map(({ name, shape }) => ({ name, dtype, shape }));
  const produce = (name: string): Uint8Array => {
    const { shape, init } = inits.get(name)!;
    return fromFloat32(tensorValues(spec.name, name, shape, init), dtype);
  };
  const metadata = { format: 'pt' };
  if (spec.shards === 1) {
    await writeSafetensors(path.join(dir, 'model.safetensors'), entries, produce, metadata);
  } else {
    const total = entries.reduce((sum, e) => sum + e.shape.reduce((a, b) => a * b, 1) * (dtype === 'F32' ? 4 : 2), 0);
    const files = await writeShardedCheckpoint(dir, entries, produce, {
      maxShardBytes: Math.ceil((total * 1.1) / spec.shards),
      metadata,
    });
    if (files.length !== spec.shards + 1) throw new Error(`${spec.name}: expected ${spec.shards} shards, wrote ${files.join(', ')}`);
  }

  await fs.writeFile(path.join(dir, 'config.json'), jsonText(syntheticConfigJson(spec)));
  await fs.writeFile(path.join(dir, 'generation_config.json'), jsonText({ bos_token_id: BOS_ID, eos_token_id: EOS_ID }));
  await fs.writeFile(path.join(dir, 'tokenizer.json'), jsonText(tokenizerJson(config.vocab_size)));
  await fs.writeFile(path.join(dir, 'tokenizer_config.json'), jsonText(tokenizerConfigJson(config.max_position_embeddings)));
  await fs.writeFile(path.join(dir, 'special_tokens_map.json'), jsonText({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }));
}

/**
 * Writes one synthetic checkpoint as the model folder `target` itself (atomically, with llmopt.json
 * recording `options` as the synth pass), for `llmopt synth`.
 */
export async function writeSyntheticFolder(target: string, spec: SyntheticSpec, options: Record<string, unknown>): Promise<void> {
  await writeModelFolder(target, { format: 'llmopt-checkpoint', source: null, passes: [passRecord('synth', options)] }, async (tmp) => {
    // The generator writes <dir>/<name> (seeds come from the name); the folder's files move up to the target.
    await writeSyntheticLlama(tmp, spec);
    const inner = path.join(tmp, spec.name);
    for (const f of readdirSync(inner)) renameSync(path.join(inner, f), path.join(tmp, f));
    rmdirSync(inner);
  });
}
