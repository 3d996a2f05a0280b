// Structural checks of an ONNX model that llmopt can run without onnxruntime (SSA names, topological order,
// dangling or unused values, opset imports), and lazy access to a model's initializers and their external data.
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import type onnxProto from 'onnx-proto';
import { InputError } from '../../errors.js';
import { decodeModel, onnx } from './graph.js';

type ModelProto = onnxProto.onnx.IModelProto;
type GraphProto = onnxProto.onnx.IGraphProto;
type TensorProto = onnxProto.onnx.ITensorProto;

/** What {@link checkGraph} may tolerate. */
export interface CheckOptions {
  /** Graph inputs no node reads are not reported (some runtimes feed inputs a graph ignores). */
  allowUnusedInputs?: boolean;
  /** Initializers no node reads are not reported. */
  allowUnusedInitializers?: boolean;
}

/** Result of {@link checkGraph}: sizes of the main graph and every problem found (empty when valid). */
export interface GraphCheckReport {
  nodes: number;
  initializers: number;
  problems: string[];
}

// protobufjs decodes int64 fields as numbers or Long objects depending on their size.
function toInt(v: number | { toNumber(): number } | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

// "ai.onnx" and "" name the same default domain.
function normalDomain(domain: string | null | undefined): string {
  return !domain || domain === 'ai.onnx' ? '' : domain;
}

function describe(node: onnxProto.onnx.INodeProto, index: number): string {
  return `node ${node.name ? `"${node.name}"` : `#${index}`} (${node.opType ?? '?'})`;
}

/** What every graph of one model is checked against, and where problems go. */
interface Scope {
  problems: string[];
  imported: Set<string>;
  opts: CheckOptions;
}

/**
 * Checks one graph against the names visible from enclosing graphs (`outer`); returns the outer names it reads,
 * so the enclosing graph counts them as used.
 */
function checkScope(graph: GraphProto, outer: ReadonlySet<string>, where: string, scope: Scope, topLevel: boolean): Set<string> {
  const { problems } = scope;
  const readsOuter = new Set<string>();
  const defined = new Map<string, string>(); // name -> what defines it, for SSA messages
  const used = new Set<string>();
  const define = (name: string, what: string): void => {
    const earlier = defined.get(name);
    if (earlier !== undefined) problems.push(`${where}: "${name}" is defined twice (${earlier} and ${what})`);
    else if (outer.has(name)) problems.push(`${where}: ${what} "${name}" shadows a value of an enclosing graph`);
    else defined.set(name, what);
  };

  const inputNames = new Set<string>();
  for (const input of graph.input ?? []) {
    const name = input.name ?? '';
    if (name === '') problems.push(`${where}: a graph input has no name`);
    else if (inputNames.has(name)) problems.push(`${where}: graph input "${name}" is listed twice`);
    else {
      inputNames.add(name);
      define(name, 'graph input');
    }
  }
  const initializerNames: string[] = [];
  const sparse = (graph.sparseInitializer ?? []).map((s) => s.values?.name ?? '');
  for (const name of [...(graph.initializer ?? []).map((t) => t.name ?? ''), ...sparse]) {
    if (name === '') {
      problems.push(`${where}: an initializer has no name`);
      continue;
    }
    initializerNames.push(name);
    // An initializer may share its name with a graph input: it is then that input's default value.
    if (!inputNames.has(name)) define(name, 'initializer');
  }

  // Every producer up front, so an input read before its producer can be told from one never produced.
  const producerIndex = new Map<string, number>();
  (graph.node ?? []).forEach((node, i) => {
    for (const out of node.output ?? []) if (out && !producerIndex.has(out)) producerIndex.set(out, i);
  });

  const nodeNames = new Set<string>();
  const read = (name: string, reader: string, index: number): void => {
    if (defined.has(name)) used.add(name);
    else if (outer.has(name)) readsOuter.add(name);
    else {
      const later = producerIndex.get(name);
      if (later !== undefined && later >= index) {
        problems.push(`${where}: ${reader} reads "${name}" before node #${later} produces it (nodes are not in topological order)`);
      } else {
        problems.push(`${where}: ${reader} reads "${name}", which no graph input, initializer or earlier node produces`);
      }
    }
  };

  (graph.node ?? []).forEach((node, i) => {
    const what = describe(node, i);
    if (!node.opType) problems.push(`${where}: ${what} has no op_type`);
    if (node.name) {
      if (nodeNames.has(node.name)) problems.push(`${where}: node name "${node.name}" is used by more than one node`);
      nodeNames.add(node.name);
    }
    const domain = normalDomain(node.domain);
    if (!scope.imported.has(domain)) {
      problems.push(`${where}: ${what} uses domain "${domain || 'ai.onnx'}", which the model's opset_import does not import`);
    }
    for (const name of node.input ?? []) if (name) read(name, what, i);
    // Subgraphs (If/Loop/Scan bodies) may read any value defined so far in this graph or an enclosing one.
    for (const attr of node.attribute ?? []) {
      const subgraphs = [...(attr.g ? [attr.g] : []), ...(attr.graphs ?? [])];
      for (const sub of subgraphs) {
        const visible = new Set([...outer, ...defined.keys()]);
        for (const name of checkScope(sub, visible, `${where} > ${what}.${attr.name ?? '?'}`, scope, false)) read(name, what, i);
      }
    }
    for (const name of node.output ?? []) if (name) define(name, what);
  });

  const outputNames = new Set<string>();
  for (const output of graph.output ?? []) {
    const name = output.name ?? '';
    if (name === '') {
      problems.push(`${where}: a graph output has no name`);
      continue;
    }
    if (outputNames.has(name)) problems.push(`${where}: graph output "${name}" is listed twice`);
    outputNames.add(name);
    if (defined.has(name)) used.add(name);
    else if (outer.has(name)) readsOuter.add(name);
    else problems.push(`${where}: graph output "${name}" is not produced by any node, graph input or initializer`);
  }

  if (!scope.opts.allowUnusedInitializers) {
    for (const name of initializerNames) if (!used.has(name)) problems.push(`${where}: initializer "${name}" is not used`);
  }
  // Loop and Scan bodies must declare inputs they may not need, so only the main graph's inputs must be used.
  if (topLevel && !scope.opts.allowUnusedInputs) {
    const initializers = new Set(initializerNames);
    for (const name of inputNames) {
      if (!used.has(name) && !initializers.has(name)) problems.push(`${where}: graph input "${name}" is not used`);
    }
  }
  return readsOuter;
}

function asModel(model: ModelProto | Uint8Array): ModelProto {
  if (!(model instanceof Uint8Array)) return model;
  try {
    return decodeModel(model);
  } catch (error) {
    throw new InputError(`not a valid ONNX model (${(error as Error).message})`);
  }
}

/**
 * Structural check of a model: nodes in topological order, every node input produced by a graph input, an
 * initializer or an earlier node, every graph output produced, no unused initializers or graph inputs, every
 * value defined once (SSA), unique node names, and every node's domain imported. Subgraphs are checked too.
 * Accepts a decoded model or the bytes of a model.onnx; throws {@link InputError} only when bytes do not decode.
 */
export function checkGraph(model: ModelProto | Uint8Array, opts: CheckOptions = {}): GraphCheckReport {
  const m = asModel(model);
  const graph = m.graph;
  if (!graph) return { nodes: 0, initializers: 0, problems: ['model has no graph'] };
  const imported = new Set<string>();
  const problems: string[] = [];
  for (const entry of m.opsetImport ?? []) {
    const domain = normalDomain(entry.domain);
    if (imported.has(domain)) problems.push(`opset_import lists domain "${domain || 'ai.onnx'}" twice`);
    imported.add(domain);
  }
  const scope: Scope = { problems, imported, opts };
  checkScope(graph, new Set(), `graph "${graph.name ?? ''}"`, scope, true);
  return { nodes: graph.node?.length ?? 0, initializers: graph.initializer?.length ?? 0, problems };
}

/** Most problems an error message lists before summarising the rest. */
const MAX_LISTED = 20;

/** {@link checkGraph}, throwing an Error that lists the problems when there are any. */
export function assertGraphValid(model: ModelProto | Uint8Array, opts: CheckOptions = {}): GraphCheckReport {
  const report = checkGraph(model, opts);
  const { problems } = report;
  if (problems.length > 0) {
    const listed = problems.slice(0, MAX_LISTED).map((p) => `  - ${p}`);
    if (problems.length > MAX_LISTED) listed.push(`  … and ${problems.length - MAX_LISTED} more`);
    throw new Error(`ONNX graph has ${problems.length} structural problem(s):\n${listed.join('\n')}`);
  }
  return report;
}

/** Bits per element of each TensorProto.DataType with a fixed width (strings have none). */
const ELEM_BITS: Record<number, number> = {
  1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128, 16: 16,
  17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4,
};

/** One initializer of a model.onnx: its header, with the bytes fetched only when asked for. */
export interface OnnxInitializer {
  name: string;
  /** TensorProto.DataType number (see `Elem`). */
  elemType: number;
  dims: number[];
  /** Bytes of the tensor's little-endian data. */
  byteLength: number;
  /** Whether the bytes live in an external data file rather than in model.onnx. */
  external: boolean;
  /** The tensor's little-endian bytes, in a new buffer starting at offset 0. */
  read(): Promise<Uint8Array>;
}

/** Largest single read; Node's file calls take 32-bit lengths. */
const IO_CHUNK_BYTES = 1 << 30;

async function readAt(file: string, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  const handle: FileHandle = await fs.open(file, 'r');
  try {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await handle.read(out, done, Math.min(IO_CHUNK_BYTES, length - done), offset + done);
      if (bytesRead === 0) throw new InputError(`${file}: unexpected end of file at byte ${offset + done}`);
      done += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return out;
}

function copyOf(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.byteLength);
  out.set(bytes);
  return out;
}

/** In-line data from the typed fields (float_data, int32_data, ...) as little-endian bytes. */
function typedFieldBytes(t: TensorProto, where: string): Uint8Array | null {
  const T = onnx.TensorProto.DataType;
  const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const big = (v: number | { toString(): string }): bigint => BigInt(typeof v === 'number' ? v : v.toString());
  switch (t.dataType) {
    case T.FLOAT:
      return t.floatData?.length ? bytes(Float32Array.from(t.floatData)) : null;
    case T.DOUBLE:
      return t.doubleData?.length ? bytes(Float64Array.from(t.doubleData)) : null;
    case T.INT64:
      return t.int64Data?.length ? bytes(BigInt64Array.from(t.int64Data, big)) : null;
    case T.UINT64:
      return t.uint64Data?.length ? bytes(BigUint64Array.from(t.uint64Data, big)) : null;
    case T.UINT32:
      return t.uint64Data?.length ? bytes(Uint32Array.from(t.uint64Data, (v) => toInt(v))) : null;
    case T.INT32:
      return t.int32Data?.length ? bytes(Int32Array.from(t.int32Data)) : null;
    case T.INT16:
    case T.UINT16:
    case T.FLOAT16:
    case T.BFLOAT16:
      // 16-bit types keep one element (or its bit pattern) per int32_data entry.
      return t.int32Data?.length ? bytes(Uint16Array.from(t.int32Data, (v) => v & 0xffff)) : null;
    case T.INT8:
    case T.UINT8:
    case T.BOOL:
    case 17:
    case 18:
    case 19:
    case 20:
      return t.int32Data?.length ? Uint8Array.from(t.int32Data, (v) => v & 0xff) : null;
    default:
      if (t.int32Data?.length || t.int64Data?.length || t.stringData?.length) {
        throw new InputError(`${where}: in-line data of element type ${t.dataType} is not supported`);
      }
      return null;
  }
}

/**
 * Decodes a model.onnx and lists its initializers with their data located but not loaded: external data is
 * resolved relative to the model file and checked against the data file's size, then read lazily with
 * positioned reads; in-line data (raw_data or the typed fields) is copied on each read. Throws
 * {@link InputError} for an unreadable model, an external location outside the model's folder, or data
 * that does not fit its file or its dtype and shape.
 */
export async function readOnnxInitializers(modelPath: string): Promise<OnnxInitializer[]> {
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(modelPath);
  } catch (error) {
    throw new InputError(`cannot read ${modelPath}: ${(error as Error).message}`);
  }
  let model: ModelProto;
  try {
    model = decodeModel(bytes);
  } catch (error) {
    throw new InputError(`${modelPath}: not a valid ONNX model (${(error as Error).message})`);
  }
  const dir = path.dirname(path.resolve(modelPath));
  const sizes = new Map<string, number>();
  const sizeOf = async (file: string, where: string): Promise<number> => {
    let size = sizes.get(file);
    if (size === undefined) {
      try {
        size = (await fs.stat(file)).size;
      } catch (error) {
        throw new InputError(`${where}: external data file ${file} cannot be read (${(error as Error).message})`);
      }
      sizes.set(file, size);
    }
    return size;
  };

  const out: OnnxInitializer[] = [];
  for (const t of model.graph?.initializer ?? []) {
    const name = t.name ?? '';
    const where = `${modelPath}: initializer "${name}"`;
    const elemType = t.dataType ?? 0;
    const dims = (t.dims ?? []).map((d) => toInt(d));
    const numel = dims.reduce((a, b) => a * b, 1);
    const bits = ELEM_BITS[elemType];
    const expected = bits === undefined ? undefined : Math.ceil((numel * bits) / 8);

    if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
      const entries = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
      const location = entries.get('location');
      if (!location) throw new InputError(`${where}: external data has no location`);
      const file = path.resolve(dir, location);
      const rel = path.relative(dir, file);
      // Like onnxruntime, refuse data files outside the model's folder: a model must not read arbitrary files.
      if (path.isAbsolute(location) || rel.startsWith('..') || path.isAbsolute(rel)) {
        throw new InputError(`${where}: external data location "${location}" is outside the model's folder`);
      }
      const offset = Number(entries.get('offset') ?? '0');
      const size = await sizeOf(file, where);
      const length = entries.has('length') ? Number(entries.get('length')) : (expected ?? size - offset);
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
        throw new InputError(`${where}: external data offset/length ${entries.get('offset')}/${entries.get('length')} are not byte counts`);
      }
      if (expected !== undefined && length !== expected) {
        throw new InputError(`${where}: external data holds ${length} bytes but element type ${elemType} [${dims}] needs ${expected}`);
      }
      if (offset + length > size) {
        throw new InputError(`${where}: external data [${offset}, ${offset + length}) runs past the end of ${location} (${size} bytes)`);
      }
      out.push({ name, elemType, dims, byteLength: length, external: true, read: () => readAt(file, offset, length) });
      continue;
    }

    const inline = t.rawData?.byteLength ? t.rawData : (typedFieldBytes(t, where) ?? new Uint8Array(0));
    if (expected !== undefined && inline.byteLength !== expected) {
      throw new InputError(`${where}: holds ${inline.byteLength} bytes in-line but element type ${elemType} [${dims}] needs ${expected}`);
    }
    out.push({ name, elemType, dims, byteLength: inline.byteLength, external: false, read: async () => copyOf(inline) });
  }
  return out;
}
