// Reads a Hugging Face config.json (and generation_config.json): typed key access naming the file, and the
// Llama baseline spec. Which architecture a config is, and what it changes, is model/architectures/.
import { readFileSync, existsSync } from 'node:fs';
import { InputError } from '../core/errors.js';
import { uniformBiases, type DecoderSpec, type RopeScaling, type WeightDtype } from '../core/spec.js';

export const SUPPORTED_ROPE_TYPES = ['default', 'linear', 'llama3'];

export type Json = Record<string, unknown>;

/** Parses a JSON file, with an InputError naming the file when it is missing or malformed. */
export function readJsonFile(path: string): Json {
  if (!existsSync(path)) throw new InputError(`${path}: file not found`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(path));
  } catch {
    throw new InputError(`${path}: not valid UTF-8`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InputError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InputError(`${path}: expected a JSON object`);
  }
  return value as Json;
}

/** Typed field access that names the file and key in every error. */
export class ConfigReader {
  constructor(
    readonly path: string,
    readonly json: Json,
  ) {}

  fail(key: string, problem: string): never {
    throw new InputError(`${this.path}: "${key}" ${problem}`);
  }

  int(key: string, fallback?: number): number {
    const v = this.json[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.fail(key, 'is missing');
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) this.fail(key, `must be a positive integer, found ${JSON.stringify(v)}`);
    return v;
  }

  num(key: string, fallback?: number): number {
    const v = this.json[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.fail(key, 'is missing');
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, `must be a number, found ${JSON.stringify(v)}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, found ${JSON.stringify(v)}`);
    return v;
  }

  str(key: string): string | undefined {
    const v = this.json[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') this.fail(key, `must be a string, found ${JSON.stringify(v)}`);
    return v;
  }

  /** A token id or list of ids (eos_token_id may be either). */
  ids(key: string): number[] {
    const v = this.json[key];
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    for (const x of list)
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0)
        this.fail(key, `must be a token id or a list of ids, found ${JSON.stringify(v)}`);
    return list as number[];
  }
}

/** rope_scaling as config.json writes it (the inverse of parseRopeScaling; longrope is Phi-3's, written there). */
export function ropeScalingJson(r: RopeScaling | null): Json | null {
  if (r === null) return null;
  if (r.type === 'linear') return { rope_type: 'linear', factor: r.factor };
  if (r.type === 'llama3') {
    return {
      rope_type: 'llama3',
      factor: r.factor,
      low_freq_factor: r.lowFreqFactor,
      high_freq_factor: r.highFreqFactor,
      original_max_position_embeddings: r.originalMaxPositions,
    };
  }
  return {
    rope_type: 'longrope',
    short_factor: r.shortFactor,
    long_factor: r.longFactor,
    original_max_position_embeddings: r.originalMaxPositions,
    attention_factor: r.attentionFactor,
  };
}

/** A token id list as config.json writes it: one id bare, several as a list, none as null. */
const idsJson = (ids: number[]): number | number[] | null => (ids.length === 0 ? null : ids.length === 1 ? ids[0]! : ids);

/**
 * The Llama config.json of a spec's baseline fields, which {@link llamaBaseSpec} reads back to the same values;
 * model/architectures/ adds and removes what each architecture writes differently.
 */
export function llamaConfigJson(spec: DecoderSpec): Json {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: spec.hiddenSize,
    intermediate_size: spec.intermediateSize,
    num_hidden_layers: spec.numLayers,
    num_attention_heads: spec.numHeads,
    num_key_value_heads: spec.kvHeads,
    head_dim: spec.headDim,
    max_position_embeddings: spec.maxPositions,
    rms_norm_eps: spec.rmsNormEps,
    rope_theta: spec.ropeTheta,
    rope_scaling: ropeScalingJson(spec.ropeScaling),
    tie_word_embeddings: spec.tiedEmbeddings,
    attention_bias: spec.biases.q,
    mlp_bias: spec.biases.gate,
    hidden_act: 'silu',
    vocab_size: spec.vocabSize,
    torch_dtype: spec.weightDtype,
    bos_token_id: spec.bosTokenId,
    eos_token_id: idsJson(spec.eosTokenIds),
    pad_token_id: spec.padTokenId,
  };
}

function parseRopeScaling(cfg: ConfigReader): RopeScaling | null {
  const raw = cfg.json.rope_scaling;
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new InputError(`${cfg.path}: "rope_scaling" must be an object or null`);
  const r = new ConfigReader(cfg.path, raw as Json);
  const type = r.str('rope_type') ?? r.str('type') ?? 'default';
  if (type === 'default') return null;
  if (type === 'linear') return { type: 'linear', factor: r.num('factor') };
  if (type === 'llama3') {
    return {
      type: 'llama3',
      factor: r.num('factor'),
      lowFreqFactor: r.num('low_freq_factor'),
      highFreqFactor: r.num('high_freq_factor'),
      originalMaxPositions: r.int('original_max_position_embeddings'),
    };
  }
  throw new InputError(`${cfg.path}: rope_scaling type "${type}" is not supported (supported: ${SUPPORTED_ROPE_TYPES.join(', ')})`);
}

function parseDtype(cfg: ConfigReader): WeightDtype {
  const t = cfg.str('torch_dtype') ?? cfg.str('dtype') ?? 'float32';
  if (t === 'float32' || t === 'float16' || t === 'bfloat16') return t;
  throw new InputError(`${cfg.path}: "torch_dtype" ${t} is not supported (supported: float32, float16, bfloat16)`);
}

/**
 * The Llama baseline every architecture starts from (model/architectures/ states the differences):
 * sizes, rotary, norms, dtype and special tokens, with biases from attention_bias / mlp_bias.
 * `path` names config.json in messages; `generation` is generation_config.json when present.
 */
export function llamaBaseSpec(cfg: ConfigReader, generation?: Json): DecoderSpec {
  const { path, json } = cfg;
  const act = cfg.str('hidden_act') ?? 'silu';
  if (act !== 'silu') throw new InputError(`${path}: "hidden_act" ${act} is not supported (supported: silu)`);
  const partial = cfg.num('partial_rotary_factor', 1);
  if (partial !== 1) throw new InputError(`${path}: "partial_rotary_factor" ${partial} is not supported (supported: 1)`);

  const hiddenSize = cfg.int('hidden_size');
  const numHeads = cfg.int('num_attention_heads');
  const kvHeads = cfg.int('num_key_value_heads', numHeads);
  if (numHeads % kvHeads !== 0)
    throw new InputError(`${path}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${kvHeads}`);
  let headDim: number;
  if (json.head_dim !== undefined && json.head_dim !== null) headDim = cfg.int('head_dim');
  else {
    if (hiddenSize % numHeads !== 0)
      throw new InputError(
        `${path}: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} and no head_dim is given`,
      );
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) throw new InputError(`${path}: head_dim ${headDim} must be even for rotary embeddings`);

  const gen = generation ? new ConfigReader(path.replace(/config\.json$/, 'generation_config.json'), generation) : undefined;
  const eos = gen?.ids('eos_token_id').length ? gen.ids('eos_token_id') : cfg.ids('eos_token_id');
  const bos = gen?.ids('bos_token_id')[0] ?? cfg.ids('bos_token_id')[0] ?? null;
  const pad = gen?.ids('pad_token_id')[0] ?? cfg.ids('pad_token_id')[0] ?? null;

  return {
    architecture: 'llama',
    hiddenSize,
    numLayers: cfg.int('num_hidden_layers'),
    numHeads,
    kvHeads,
    headDim,
    intermediateSize: cfg.int('intermediate_size'),
    vocabSize: cfg.int('vocab_size'),
    maxPositions: cfg.int('max_position_embeddings'),
    rmsNormEps: cfg.num('rms_norm_eps', 1e-6),
    ropeTheta: cfg.num('rope_theta', 10000),
    ropeScaling: parseRopeScaling(cfg),
    tiedEmbeddings: cfg.bool('tie_word_embeddings', false),
    biases: uniformBiases(cfg.bool('attention_bias', false), cfg.bool('mlp_bias', false)),
    qkNorm: false,
    ropeLayers: null,
    weightDtype: parseDtype(cfg),
    bosTokenId: bos,
    eosTokenIds: eos,
    padTokenId: pad,
  };
}
