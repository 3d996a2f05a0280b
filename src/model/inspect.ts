// What a model folder holds — architecture, parameter count, bytes per dtype and per-tensor statistics —
// for a Hugging Face checkpoint or an exported llmopt artifact, read one tensor at a time.
import type { GgufValue } from '../formats/gguf/file.js';
import { dequantizeTensor, isGgufFile, readGgufModel } from './gguf-model.js';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InputError } from '../core/errors.js';
import { isArtifact, priorPasses, type PassRecord } from '../formats/artifact.js';
import { openArtifact } from './artifact.js';
import { toFloat32, type DType } from '../formats/dtype.js';
import { readJsonFile } from '../formats/hf-config.js';
import { readModelSpec } from './architectures/index.js';
import { openQuantizedCheckpoint } from './checkpoint.js';
import { countNmViolations } from './sparsity.js';
import { readOnnxModel, type ModelProto } from '../formats/onnx/initializers.js';
import { Elem } from '../formats/onnx/graph.js';
import { Checkpoint } from '../formats/safetensors.js';
import type { DecoderSpec, RopeScaling } from '../core/spec.js';

/** The architecture in the field's usual words. */
export interface ArchitectureSummary {
  /** The architecture description the config was read with (model/architectures/). */
  name: string;
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  /** Longest context (max_position_embeddings). */
  context: number;
  tied: boolean;
  ropeScaling: RopeScaling | null;
}

/** One tensor and its statistics; the statistics are null for integer dtypes and empty tensors. */
export interface TensorReport {
  name: string;
  /** safetensors dtype name (F32, BF16, I8, ...); ONNX element types are named the same way (U4, I4 added). */
  dtype: string;
  shape: number[];
  numel: number;
  bytes: number;
  min: number | null;
  max: number | null;
  mean: number | null;
  std: number | null;
  zeroFraction: number | null;
  /** NaN and infinite elements, left out of min, max, mean and std (null when no statistics). */
  nonFinite: number | null;
  /** For linear weights of an N:M-pruned checkpoint: groups of M inputs with fewer than M-N zeros. */
  nmViolations?: number;
}

/** An artifact's MatMulNBits nodes: the settings onnxruntime computes them with, as counts of nodes. */
export interface ProductsReport {
  nodes: number;
  /** Nodes by accuracy_level (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations). */
  accuracyLevels: Record<string, number>;
  /** Nodes by block_size. */
  blockSizes: Record<string, number>;
  /** Nodes given zero points (asymmetric blocks). */
  zeroPoints: number;
  /** Nodes that also multiply their activations' int8 rounding residual (rows stacked under A by a Concat). */
  activationResidual: number;
  /** GatherBlockQuantized nodes: embeddings read from block-quantized tables. */
  quantizedGathers: number;
}

/** What {@link inspectModel} reports. */
export interface InspectReport {
  kind: 'huggingface' | 'artifact' | 'gguf';
  /** The folder, as an absolute path. */
  path: string;
  architecture: ArchitectureSummary;
  /** Elements of the weight tensors (an artifact's rotary caches and graph constants are not weights). */
  parameters: number;
  dtypes: Record<string, { tensors: number; bytes: number }>;
  /** Bytes of all tensor data. */
  bytes: number;
  /** Fraction of exact zeros among the elements of float weight tensors (0 when there are none). */
  zeroFraction: number;
  tensors: TensorReport[];
  /** Passes recorded in llmopt.json, oldest first. */
  manifest?: PassRecord[];
  /** GGUF files: the metadata keys and values (arrays summarized by item type and count). */
  metadata?: Record<string, string | number | boolean>;
  /**
   * Artifacts with block-quantized weights: each weight's bits (module, `model.embed_tokens` or `lm_head`), read
   * from its MatMulNBits / GatherBlockQuantized initializer (`<module>.weight_Q<bits>`); several values under --mix.
   */
  weightBits?: Record<string, number>;
  /** Artifacts with MatMulNBits products: how they compute, read from the graph's nodes. */
  products?: ProductsReport;
  /** N:M compliance of the linear weights, when the checkpoint declares N:M pruning or --nm asks. */
  nm?: { n: number; m: number; tensors: number; compliant: number; violatingTensors: string[] };
}

export interface InspectOptions {
  /** Progress: called with (tensors read, tensors in all). */
  onProgress?: (done: number, total: number) => void;
  /** Check this N:M pattern (default: the one config.json's llmopt_pruning declares, if any). */
  nm?: { n: number; m: number };
}

/** The N:M pattern config.json declares (`llmopt_pruning.structure` such as "2:4"), or null. */
function declaredNm(config: Record<string, unknown>): { n: number; m: number } | null {
  const p = config.llmopt_pruning as { structure?: unknown } | undefined;
  const match = typeof p?.structure === 'string' ? /^(\d+):(\d+)$/.exec(p.structure) : null;
  return match ? { n: Number(match[1]), m: Number(match[2]) } : null;
}

/** Linear projection weights of the decoder layers, the tensors N:M pruning targets. */
const LINEAR_WEIGHT = /^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$/;

/** ONNX element types named as safetensors names dtypes. */
const ONNX_DTYPE: Record<number, string> = {
  [Elem.FLOAT]: 'F32',
  [Elem.UINT8]: 'U8',
  [Elem.INT8]: 'I8',
  4: 'U16',
  5: 'I16',
  [Elem.INT32]: 'I32',
  [Elem.INT64]: 'I64',
  [Elem.BOOL]: 'BOOL',
  [Elem.FLOAT16]: 'F16',
  11: 'F64',
  12: 'U32',
  13: 'U64',
  [Elem.BFLOAT16]: 'BF16',
  17: 'F8_E4M3',
  [Elem.UINT4]: 'U4',
  [Elem.INT4]: 'I4',
};

/** Float dtypes whose values get statistics (the ones toFloat32 reads as floats). */
const FLOAT_DTYPES = new Set<string>(['F64', 'F32', 'F16', 'BF16', 'F8_E4M3']);

/** Initializers an exporter adds that are not model weights. */
const ROTARY_CACHES = new Set(['cos_cache', 'sin_cache']);

function architectureOf(spec: DecoderSpec): ArchitectureSummary {
  return {
    name: spec.architecture,
    layers: spec.numLayers,
    hidden: spec.hiddenSize,
    heads: spec.numHeads,
    kvHeads: spec.kvHeads,
    headDim: spec.headDim,
    intermediate: spec.intermediateSize,
    vocab: spec.vocabSize,
    context: spec.maxPositions,
    tied: spec.tiedEmbeddings,
    ropeScaling: spec.ropeScaling,
  };
}

interface Stats {
  min: number | null;
  max: number | null;
  mean: number | null;
  std: number | null;
  zeros: number;
  nonFinite: number;
}

/** min, max, mean, population std and zero count, accumulated in float64 over the finite values. */
export function tensorStatistics(values: Float32Array): Stats {
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  let finite = 0;
  let zeros = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (x === 0) zeros++;
    if (!Number.isFinite(x)) continue;
    finite++;
    sum += x;
    if (x < min) min = x;
    if (x > max) max = x;
  }
  if (finite === 0) return { min: null, max: null, mean: null, std: null, zeros, nonFinite: values.length };
  const mean = sum / finite;
  // Two passes (mean, then squared deviations) keep std accurate when the mean is large against the spread.
  let squares = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (Number.isFinite(x)) squares += (x - mean) * (x - mean);
  }
  return { min, max, mean, std: Math.sqrt(squares / finite), zeros, nonFinite: values.length - finite };
}

/** Adds tensors to a report one at a time, keeping the running totals. */
class ReportBuilder {
  readonly tensors: TensorReport[] = [];
  readonly dtypes: Record<string, { tensors: number; bytes: number }> = {};
  bytes = 0;
  parameters = 0;
  private weightElements = 0;
  private weightZeros = 0;

  /** `values` is null for dtypes without statistics; `weight` says whether the tensor counts as a parameter. */
  add(name: string, dtype: string, shape: number[], bytes: number, values: Float32Array | null, weight: boolean): void {
    const numel = shape.reduce((a, b) => a * b, 1);
    const stats = values ? tensorStatistics(values) : null;
    const hasStats = stats !== null && numel > 0;
    this.tensors.push({
      name,
      dtype,
      shape,
      numel,
      bytes,
      min: hasStats ? stats.min : null,
      max: hasStats ? stats.max : null,
      mean: hasStats ? stats.mean : null,
      std: hasStats ? stats.std : null,
      zeroFraction: hasStats ? stats.zeros / numel : null,
      nonFinite: hasStats ? stats.nonFinite : null,
    });
    const d = (this.dtypes[dtype] ??= { tensors: 0, bytes: 0 });
    d.tensors++;
    d.bytes += bytes;
    this.bytes += bytes;
    if (weight) {
      this.parameters += numel;
      if (stats) {
        this.weightElements += numel;
        this.weightZeros += stats.zeros;
      }
    }
  }

  get zeroFraction(): number {
    return this.weightElements === 0 ? 0 : this.weightZeros / this.weightElements;
  }
}

async function inspectHuggingFace(dir: string, opts: InspectOptions): Promise<InspectReport> {
  const spec = readModelSpec(dir);
  const nmPattern = opts.nm ?? declaredNm(readJsonFile(join(dir, 'config.json')));
  const nm = nmPattern ? { ...nmPattern, tensors: 0, compliant: 0, violatingTensors: [] as string[] } : undefined;
  const checkpoint = await Checkpoint.open(dir);
  const report = new ReportBuilder();
  try {
    const names = checkpoint.names();
    for (const [i, name] of names.entries()) {
      const info = checkpoint.info(name);
      const values = FLOAT_DTYPES.has(info.dtype) ? await checkpoint.readFloat32(name) : null;
      report.add(name, info.dtype, info.shape, info.byteLength, values, true);
      if (nm && values && LINEAR_WEIGHT.test(name) && info.shape.length === 2 && info.shape[1]! % nm.m === 0) {
        const violations = countNmViolations(values, info.shape[0]!, info.shape[1]!, nm.n, nm.m);
        report.tensors[report.tensors.length - 1]!.nmViolations = violations;
        nm.tensors++;
        if (violations === 0) nm.compliant++;
        else nm.violatingTensors.push(name);
      }
      opts.onProgress?.(i + 1, names.length);
    }
  } finally {
    await checkpoint.close();
  }
  const passes = priorPasses(dir);
  const weightBits = await packedWeightBits(dir);
  return {
    ...(passes.length ? { manifest: passes } : {}),
    ...(nm ? { nm } : {}),
    ...(weightBits ? { weightBits } : {}),
    kind: 'huggingface',
    path: dir,
    architecture: architectureOf(spec),
    parameters: report.parameters,
    dtypes: report.dtypes,
    bytes: report.bytes,
    zeroFraction: report.zeroFraction,
    tensors: report.tensors,
  };
}

/**
 * A packed int checkpoint's (GPTQ, AWQ, compressed-tensors) bits per quantized module, from its layout; null for
 * others, a quantization llmopt does not read included (its tensors are still listed as stored).
 */
async function packedWeightBits(dir: string): Promise<Record<string, number> | null> {
  let opened: Awaited<ReturnType<typeof openQuantizedCheckpoint>>;
  try {
    opened = await openQuantizedCheckpoint(dir, readJsonFile(join(dir, 'config.json')));
  } catch (e) {
    if (e instanceof InputError) return null;
    throw e;
  }
  if (!opened) return null;
  try {
    const bits: Record<string, number> = {};
    for (const module of opened.source.quantizedModules) bits[module] = opened.source.bitsOf(module);
    return bits;
  } finally {
    await opened.source.close();
  }
}

/** The MatMulNBits and GatherBlockQuantized nodes of an artifact's graph, summarized; null when it has none. */
function productsOf(model: ModelProto): ProductsReport | null {
  const nodes = model.graph?.node ?? [];
  const producer = new Map<string, (typeof nodes)[number]>();
  for (const n of nodes) for (const o of n.output ?? []) producer.set(o, n);
  const attr = (n: (typeof nodes)[number], name: string, fallback: number) => {
    const a = n.attribute?.find((x) => x.name === name);
    return a ? Number(a.i) : fallback;
  };
  const r: ProductsReport = { nodes: 0, accuracyLevels: {}, blockSizes: {}, zeroPoints: 0, activationResidual: 0, quantizedGathers: 0 };
  for (const n of nodes) {
    if (n.opType === 'GatherBlockQuantized') r.quantizedGathers++;
    if (n.opType !== 'MatMulNBits') continue;
    r.nodes++;
    const level = String(attr(n, 'accuracy_level', 0));
    const block = String(attr(n, 'block_size', 0));
    r.accuracyLevels[level] = (r.accuracyLevels[level] ?? 0) + 1;
    r.blockSizes[block] = (r.blockSizes[block] ?? 0) + 1;
    if ((n.input?.[3] ?? '') !== '') r.zeroPoints++;
    // The residual's rows are stacked under the activations along the batch axis (quantize/matmul-nbits.ts).
    const a = producer.get(n.input?.[0] ?? '');
    if (a?.opType === 'Concat' && attr(a, 'axis', 1) === 0) r.activationResidual++;
  }
  return r.nodes + r.quantizedGathers > 0 ? r : null;
}

/**
 * Whether an artifact initializer is a model weight: not a rotary cache, and not a small in-line graph
 * constant (GraphBuilder names those by graph path, `/const/...`; other exporters use `onnx::...`).
 * In-line weights (norm scales, biases) keep their Hugging Face names and count.
 */
function isWeight(name: string, external: boolean): boolean {
  if (ROTARY_CACHES.has(name)) return false;
  return external || !(name.startsWith('/') || name.startsWith('onnx::'));
}

async function inspectArtifact(dir: string, opts: InspectOptions): Promise<InspectReport> {
  const artifact = openArtifact(dir);
  const { model, initializers } = await readOnnxModel(artifact.modelPath);
  const report = new ReportBuilder();
  for (const [i, init] of initializers.entries()) {
    const dtype = ONNX_DTYPE[init.elemType] ?? `ONNX_TYPE_${init.elemType}`;
    let values: Float32Array | null = null;
    if (FLOAT_DTYPES.has(dtype)) {
      const raw = await init.read();
      // read() returns a fresh buffer at offset 0, so float32 data is viewed rather than copied.
      values = dtype === 'F32' ? new Float32Array(raw.buffer, 0, raw.byteLength / 4) : toFloat32(raw, dtype as DType);
    }
    report.add(init.name, dtype, init.dims, init.byteLength, values, isWeight(init.name, init.external));
    opts.onProgress?.(i + 1, initializers.length);
  }
  // The packed codes are named `<module>.weight_Q<bits>` (quantize/matmul-nbits.ts): their bits are in the name.
  const weightBits: Record<string, number> = {};
  for (const init of initializers) {
    const m = /^(.+)\.weight_Q(\d+)$/.exec(init.name);
    if (m) weightBits[m[1]!] = Number(m[2]);
  }
  const products = productsOf(model);
  return {
    ...(Object.keys(weightBits).length ? { weightBits } : {}),
    ...(products ? { products } : {}),
    kind: 'artifact',
    path: dir,
    architecture: architectureOf(artifact.spec),
    parameters: report.parameters,
    dtypes: report.dtypes,
    bytes: report.bytes,
    zeroFraction: report.zeroFraction,
    tensors: report.tensors,
    ...(artifact.manifest ? { manifest: artifact.manifest.passes } : {}),
  };
}

/** A GGUF metadata value as inspect shows it: scalars as they are, arrays as "[N item-type]". */
function metadataValue(v: GgufValue): string | number | boolean {
  if (v.type === 'array') return `[${v.value.length} ${v.itemType}]`;
  return typeof v.value === 'bigint' ? Number(v.value) : v.value;
}

/**
 * Inspects a GGUF file: the architecture as llmopt reads it, every tensor with its ggml type (dequantized for the
 * statistics, one at a time), the metadata. Rope factor tensors are not weights.
 */
async function inspectGguf(path: string, opts: InspectOptions): Promise<InspectReport> {
  const model = await readGgufModel(path);
  const report = new ReportBuilder();
  const { tensors } = model.file;
  for (const [i, t] of tensors.entries()) {
    report.add(t.name, t.type, t.shape, t.bytes, await dequantizeTensor(model.file, t), !t.name.startsWith('rope_'));
    opts.onProgress?.(i + 1, tensors.length);
  }
  return {
    kind: 'gguf',
    path,
    architecture: architectureOf(model.spec),
    parameters: report.parameters,
    dtypes: report.dtypes,
    bytes: report.bytes,
    zeroFraction: report.zeroFraction,
    tensors: report.tensors,
    metadata: Object.fromEntries([...model.file.metadata].map(([k, v]) => [k, metadataValue(v)])),
  };
}

/**
 * Inspects a Hugging Face model folder (config.json + safetensors) or an llmopt artifact (model.onnx):
 * architecture, parameter count, bytes per dtype, and min/max/mean/std/zero fraction of every float
 * tensor. Tensors are read one at a time. Throws {@link InputError} for a missing or unreadable folder.
 * Hugging Face folders are not validated against their config: every stored tensor is listed and counted.
 */
export async function inspectModel(dir: string, opts: InspectOptions = {}): Promise<InspectReport> {
  const abs = resolve(dir);
  if (!existsSync(abs)) throw new InputError(`${dir}: folder not found`);
  if (isGgufFile(abs)) return inspectGguf(abs, opts);
  return isArtifact(abs) ? inspectArtifact(abs, opts) : inspectHuggingFace(abs, opts);
}
