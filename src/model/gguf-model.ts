// A GGUF file as a model source: its spec rebuilt from the metadata and tensor names (through the architecture
// table, inverted), its tokenizer as Hugging Face files, and its tensors dequantized to float32 one at a time in the
// Hugging Face layout. Commands that read model folders get a small companion folder (config.json, tokenizer,
// a marker naming the file) whose weights are read from the GGUF file itself.
import { closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { InputError } from '../core/errors.js';
import { expectedTensors, PROJECTIONS, type DecoderSpec, type Projection, type RopeScaling } from '../core/spec.js';
import type { WeightSource } from '../core/weights.js';
import {
  fromGgufLayout,
  GGUF_ARCHITECTURES,
  ggufArchitectureNamed,
  ggufTensorPlan,
  llama3RopeFactors,
  type GgufArchitecture,
  type GgufTensorEntry,
} from '../formats/gguf/architectures.js';
import { GGUF_MAGIC, readGgufHeader, readGgufTensor, type GgufFile, type GgufTensorInfo } from '../formats/gguf/file.js';
import { dequantizeRows } from '../formats/gguf/quants/index.js';
import type { GgmlType } from '../formats/gguf/ggml-types.js';
import { tokenizerFilesOf, type TokenizerFiles } from '../formats/gguf/tokenizer-json.js';
import { GGUF_SOURCE_MARKER } from '../formats/gguf/companion.js';
import type { Json } from '../formats/hf-config.js';
import { configJsonOf, specFromConfig } from './architectures/index.js';

/** Whether `path` is a GGUF file (by its magic, whatever its name). */
export function isGgufFile(path: string): boolean {
  if (!existsSync(path) || statSync(path).isDirectory()) return false;
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(4);
    return readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32LE(0) === GGUF_MAGIC;
  } finally {
    closeSync(fd);
  }
}

/** A GGUF file read as a model. */
export interface GgufModel {
  file: GgufFile;
  arch: GgufArchitecture;
  spec: DecoderSpec;
  config: Json;
  /** The GGUF tensor each Hugging Face tensor is stored in. */
  plan: GgufTensorEntry[];
  /** ggml types present beyond F32/F16/BF16 (empty for a float file). */
  quantizedTypes: string[];
  /** The tokenizer as Hugging Face files, from tokenizer.ggml.*. */
  tokenizer: TokenizerFiles;
}

const scalar = (file: GgufFile, key: string) => file.metadata.get(key)?.value;

/** The Hugging Face projection a layer rule holds (q for attn_q, ...), from its module names. */
function projectionOf(hfModule: string): Projection | undefined {
  const m = /(?:^|\.)(q|k|v|o|gate|up|down)_proj$/.exec(hfModule);
  return m ? (m[1] as Projection) : undefined;
}

/** Which projections carry a bias in layer 0, from the GGUF tensor names. */
function biasesOf(file: GgufFile, arch: GgufArchitecture): Record<Projection, boolean> {
  const names = new Set(file.tensors.map((t) => t.name));
  const out = Object.fromEntries(PROJECTIONS.map((p) => [p, false])) as Record<Projection, boolean>;
  for (const rule of arch.layer) {
    if (!names.has(`blk.0.${rule.gguf}.bias`)) continue;
    for (const m of rule.hf) {
      const p = projectionOf(m);
      if (p) out[p] = true;
    }
  }
  return out;
}

/** The Hugging Face names of a GGUF file's tensors, through the architecture's rules (biases and norms included). */
function hfNamesOf(file: GgufFile, arch: GgufArchitecture): Set<string> {
  const out = new Set<string>();
  for (const t of file.tensors) {
    const m = /^(?:blk\.(\d+)\.)?(.+)\.(weight|bias)$/.exec(t.name);
    if (!m) continue;
    const rules = m[1] === undefined ? arch.globals : arch.layer;
    const rule = rules.find((r) => r.gguf === m[2]);
    const prefix = m[1] === undefined ? '' : `model.layers.${m[1]}.`;
    for (const module of rule?.hf ?? []) out.add(`${prefix}${module}.${m[3]}`);
  }
  return out;
}

/** Llama 3.x rope scaling back from its rope_freqs tensor: the published parameters whose factors it holds. */
function llama3ScalingOf(path: string, spec: DecoderSpec, factors: Float32Array): RopeScaling {
  const factor = Math.max(...factors);
  for (const original of [8192, 4096, 2048, 16384, 32768]) {
    for (const [low, high] of [
      [1, 4],
      [1, 2],
      [2, 4],
    ] as const) {
      const candidate: RopeScaling = { type: 'llama3', factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositions: original };
      const back = llama3RopeFactors({ ...spec, ropeScaling: candidate });
      if (back && back.length === factors.length && back.every((v, i) => Math.abs(v - factors[i]!) <= 1e-6 * Math.abs(v))) return candidate;
    }
  }
  throw new InputError(`${path}: rope_freqs.weight matches no Llama 3 rope scaling llmopt knows (factor ${factor})`);
}

const models = new Map<string, Promise<GgufModel>>();

/**
 * Reads a GGUF file's header into a model: spec, config.json, tokenizer and the tensor plan; refuses what llmopt
 * cannot read. Read once per file and process: every pass that opens the file's companion folder shares it.
 */
export function readGgufModel(path: string): Promise<GgufModel> {
  const abs = resolve(path);
  let model = models.get(abs);
  if (!model) {
    model = readModel(abs);
    models.set(abs, model);
    // A refusal is not kept: the next open reads the file again.
    model.catch(() => models.delete(abs));
  }
  return model;
}

async function readModel(path: string): Promise<GgufModel> {
  const file = readGgufHeader(path);
  const name = scalar(file, 'general.architecture');
  const arch = typeof name === 'string' ? ggufArchitectureNamed(name) : undefined;
  if (!arch) {
    throw new InputError(
      `${path}: GGUF architecture "${String(name)}" is not one llmopt reads (it reads ${GGUF_ARCHITECTURES.map((a) => a.gguf).join(', ')})`,
    );
  }
  const partial: Partial<DecoderSpec> = {};
  for (const field of arch.metadata) {
    const key = field.key.startsWith('general.') ? field.key : `${arch.gguf}.${field.key}`;
    const v = file.metadata.get(key);
    if (v !== undefined && v.type !== 'array' && field.read) field.read(v.value, partial);
  }
  const need = (v: number | undefined, key: string): number => {
    if (v === undefined) throw new InputError(`${path}: metadata "${arch.gguf}.${key}" is missing`);
    return v;
  };
  const tensorOf = new Map(file.tensors.map((t) => [t.name, t]));
  const embd = tensorOf.get('token_embd.weight');
  if (!embd) throw new InputError(`${path}: tensor "token_embd.weight" is missing`);
  const hiddenSize = need(partial.hiddenSize, 'embedding_length');
  const numHeads = need(partial.numHeads, 'attention.head_count');
  const numLayers = need(partial.numLayers, 'block_count');
  const headDim = partial.headDim ?? hiddenSize / numHeads;
  const tokens = file.metadata.get('tokenizer.ggml.tokens');
  const maxPositions = need(partial.maxPositions, 'context_length');
  const tokenizer = tokenizerFilesOf(file.metadata, path, maxPositions);
  let spec: DecoderSpec = {
    architecture: arch.llmopt[0]!,
    hiddenSize,
    numLayers,
    numHeads,
    kvHeads: partial.kvHeads ?? numHeads,
    headDim,
    intermediateSize: need(partial.intermediateSize, 'feed_forward_length'),
    vocabSize: embd.shape[0]!,
    maxPositions,
    rmsNormEps: partial.rmsNormEps ?? 1e-5,
    ropeTheta: partial.ropeTheta ?? 10000,
    ropeScaling: partial.ropeScaling ?? null,
    tiedEmbeddings: !tensorOf.has('output.weight'),
    biases: biasesOf(file, arch),
    qkNorm: tensorOf.has('blk.0.attn_q_norm.weight'),
    ropeLayers: null,
    ...(partial.rotaryDim !== undefined && partial.rotaryDim < headDim ? { rotaryDim: partial.rotaryDim } : {}),
    weightDtype: 'float32',
    bosTokenId: tokenizer.bos,
    eosTokenIds: tokenizer.eos === null ? [] : [tokenizer.eos],
    padTokenId: tokenizer.pad,
  };
  if (tokens?.type === 'array' && tokens.value.length !== spec.vocabSize) {
    throw new InputError(`${path}: ${tokens.value.length} tokens for an embedding of ${spec.vocabSize} rows`);
  }
  // What llama.cpp fixes by architecture rather than by metadata.
  if (arch.gguf === 'smollm3') spec.ropeLayers = Array.from({ length: numLayers }, (_, i) => (i + 1) % 4 !== 0);
  if (arch.gguf === 'gemma2' || arch.gguf === 'gemma3') {
    const pattern = arch.gguf === 'gemma2' ? 2 : 6;
    spec = {
      ...spec,
      slidingWindow: partial.slidingWindow,
      slidingLayers: Array.from({ length: numLayers }, (_, i) => i % pattern < pattern - 1),
    };
    if (partial.localRopeTheta !== undefined) spec.localRopeTheta = partial.localRopeTheta;
    if (partial.attnSoftcap !== undefined) spec.attnSoftcap = partial.attnSoftcap;
    if (partial.finalSoftcap !== undefined) spec.finalSoftcap = partial.finalSoftcap;
  } else if (partial.slidingWindow !== undefined) spec.slidingWindow = partial.slidingWindow;
  spec = { ...spec, ropeScaling: await ropeScalingOf(file, spec, partial) };
  const config = configJsonOf(spec);
  // Read back through the architecture, as a config.json would be: the Gemma norms, scales and so on follow from it.
  const final = specFromConfig(config, `${path} (as config.json)`, undefined, hfNamesOf(file, arch));
  const plan = ggufTensorPlan(final, arch, expectedTensors(final));
  const planned = new Set(['rope_freqs.weight', 'rope_factors_long.weight', 'rope_factors_short.weight']);
  for (const entry of plan) {
    planned.add(entry.gguf);
    const t = tensorOf.get(entry.gguf);
    if (!t) throw new InputError(`${path}: tensor "${entry.gguf}" is missing (the metadata implies it)`);
    if (t.shape.length !== entry.shape.length || t.shape.some((d, i) => d !== entry.shape[i])) {
      throw new InputError(`${path}: tensor "${entry.gguf}" has shape [${t.shape}], the metadata implies [${entry.shape}]`);
    }
  }
  const extra = file.tensors.find((t) => !planned.has(t.name));
  if (extra) throw new InputError(`${path}: tensor "${extra.name}" is not one llmopt reads for ${arch.gguf}`);
  const quantizedTypes = [...new Set(file.tensors.map((t) => t.type).filter((t) => !isFloatType(t)))];
  return { file, arch, spec: final, config, plan, quantizedTypes, tokenizer };
}

/** rope scaling from the rope factor tensors and keys llama.cpp keeps it in. */
async function ropeScalingOf(file: GgufFile, spec: DecoderSpec, partial: Partial<DecoderSpec>): Promise<RopeScaling | null> {
  const read = async (name: string) => {
    const t = file.tensors.find((x) => x.name === name);
    return t ? dequantizeTensor(file, t) : null;
  };
  const freqs = await read('rope_freqs.weight');
  if (freqs) return llama3ScalingOf(file.path, spec, freqs);
  const long = await read('rope_factors_long.weight');
  const short = await read('rope_factors_short.weight');
  if (long && short) {
    const key = (k: string) => scalar(file, `phi3.${k}`);
    const original = Number(key('rope.scaling.original_context_length') ?? spec.maxPositions);
    const scale = spec.maxPositions / original;
    const attentionFactor = Number(
      key('rope.scaling.attn_factor') ?? (scale <= 1 ? 1 : Math.sqrt(1 + Math.log(scale) / Math.log(original))),
    );
    return { type: 'longrope', shortFactor: [...short], longFactor: [...long], originalMaxPositions: original, attentionFactor };
  }
  return partial.ropeScaling ?? null;
}

/** F32, F16 and BF16: the types a float model is stored in. */
const isFloatType = (t: GgmlType) => t === 'F32' || t === 'F16' || t === 'BF16';

/** One tensor's values as float32 ([rows, cols] row-major, GGUF layout), dequantized as ggml does. */
export async function dequantizeTensor(file: GgufFile, t: GgufTensorInfo): Promise<Float32Array> {
  const raw = await readGgufTensor(file, t);
  const cols = t.shape.at(-1)!;
  return dequantizeRows(
    t.type,
    raw,
    t.shape.slice(0, -1).reduce((a, b) => a * b, 1),
    cols,
  );
}

/** The float32 Hugging Face tensors of a GGUF model, one GGUF tensor dequantized at a time (the last one kept). */
export function ggufWeights(model: GgufModel): WeightSource {
  const byHf = new Map<string, { entry: GgufTensorEntry; part: number }>();
  for (const entry of model.plan) entry.hf.forEach((name, part) => byHf.set(name, { entry, part }));
  const shapes = expectedTensors(model.spec);
  let cached: { gguf: string; parts: Float32Array[] } | null = null;
  const info = new Map(model.file.tensors.map((t) => [t.name, t]));
  return {
    has: (name) => byHf.has(name),
    shape: (name) => {
      const s = shapes.get(name);
      if (!s) throw new InputError(`${model.file.path}: no tensor "${name}"`);
      return s;
    },
    readFloat32: async (name) => {
      const at = byHf.get(name);
      if (!at) throw new InputError(`${model.file.path}: no tensor "${name}"`);
      if (cached?.gguf !== at.entry.gguf) {
        const data = await dequantizeTensor(model.file, info.get(at.entry.gguf)!);
        cached = { gguf: at.entry.gguf, parts: fromGgufLayout(model.spec, at.entry, data) };
      }
      return cached.parts[at.part]!.slice();
    },
  };
}

const companions = new Map<string, string>();
let companionRoot: string | null = null;

/**
 * The companion folder of a GGUF file: config.json, generation_config.json and the tokenizer files a command reads
 * from a model folder, and the marker naming the file its weights come from. Made once per process, in a temporary
 * folder removed when the process exits.
 */
export async function ggufCompanionFolder(path: string): Promise<string> {
  const abs = resolve(path);
  const known = companions.get(abs);
  if (known) return known;
  const model = await readGgufModel(abs);
  if (!companionRoot) {
    companionRoot = mkdtempSync(join(tmpdir(), 'llmopt-gguf-'));
    const root = companionRoot;
    process.once('exit', () => rmSync(root, { recursive: true, force: true }));
  }
  // A folder of its own per file: two files of one name (a/m.gguf, b/m.gguf) in one run must not share one.
  const dir = mkdtempSync(join(companionRoot, `${basename(abs).replace(/\.gguf$/i, '') || 'model'}-`));
  const { tokenizer } = model;
  const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
  writeFileSync(join(dir, 'config.json'), json(model.config));
  writeFileSync(
    join(dir, 'generation_config.json'),
    json({ bos_token_id: tokenizer.bos, eos_token_id: tokenizer.eos, ...(tokenizer.pad === null ? {} : { pad_token_id: tokenizer.pad }) }),
  );
  writeFileSync(join(dir, 'tokenizer.json'), json(tokenizer.tokenizer));
  writeFileSync(join(dir, 'tokenizer_config.json'), json(tokenizer.tokenizerConfig));
  writeFileSync(join(dir, GGUF_SOURCE_MARKER), json({ file: abs, quantizedTypes: model.quantizedTypes }));
  companions.set(abs, dir);
  return dir;
}

/** A model path as commands read it: a GGUF file becomes its companion folder; anything else is returned as it is. */
export async function modelFolderOf(path: string): Promise<string> {
  return isGgufFile(path) ? ggufCompanionFolder(path) : path;
}
