// Lazy access to a model.onnx's initializers: headers decoded up front, bytes (in-line or in the
// external data file beside the model) read one tensor at a time when asked for.
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import type onnxProto from 'onnx-proto';
import { InputError } from '../../core/errors.js';
import { decodeModel, onnx } from './graph.js';

export type ModelProto = onnxProto.onnx.IModelProto;
type TensorProto = onnxProto.onnx.ITensorProto;

// protobufjs decodes int64 fields as numbers or Long objects depending on their size.
function toInt(v: number | { toNumber(): number } | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

/** Bits per element of each TensorProto.DataType with a fixed width (strings have none). */
const ELEM_BITS: Record<number, number> = {
  1: 32,
  2: 8,
  3: 8,
  4: 16,
  5: 16,
  6: 32,
  7: 64,
  9: 8,
  10: 16,
  11: 64,
  12: 32,
  13: 64,
  14: 64,
  15: 128,
  16: 16,
  17: 8,
  18: 8,
  19: 8,
  20: 8,
  21: 4,
  22: 4,
  23: 4,
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
  return (await readOnnxModel(modelPath)).initializers;
}

/** {@link readOnnxInitializers}, with the decoded model too (its nodes), for readers that want both from one decode. */
export async function readOnnxModel(modelPath: string): Promise<{ model: ModelProto; initializers: OnnxInitializer[] }> {
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
  return { model, initializers: out };
}
