// The GGUF container (llama.cpp's model file, version 3): a header of typed metadata key/values and
// tensor infos, then the aligned tensor data. The reader checks every count, length and offset against
// the file before trusting it; the writer streams tensor by tensor into a temporary file it renames at the end.
import { closeSync, existsSync, fstatSync, openSync, readSync, renameSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { mkdirSync } from 'node:fs';
import { InputError } from '../../core/errors.js';
import { removeStaleTempFolders } from '../output-dir.js';
import { GGML_TYPES, type GgmlType, ggmlTypeName, ggmlTypeOf, tensorBytes } from './ggml-types.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS. */
const MAX_DIMS = 4;

/** Metadata value types, by their GGUF ids (gguf_type). */
export const GGUF_VALUE_TYPES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'] as const;
export type GgufScalarType = Exclude<(typeof GGUF_VALUE_TYPES)[number], 'array'>;
export type GgufScalar = number | bigint | boolean | string;

/** One metadata value: a scalar of `type`, or an array of `itemType` scalars. */
export type GgufValue = { type: GgufScalarType; value: GgufScalar } | { type: 'array'; itemType: GgufScalarType; value: GgufScalar[] };

export interface GgufTensorInfo {
  name: string;
  /** Dimensions outermost first, as safetensors and ONNX write them (GGUF stores them reversed). */
  shape: number[];
  type: GgmlType;
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  bytes: number;
}

export interface GgufFile {
  path: string;
  version: number;
  alignment: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  /** Absolute offset of the data section. */
  dataOffset: number;
  fileBytes: number;
}

const SCALAR_BYTES: Record<Exclude<GgufScalarType, 'string'>, number> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  bool: 1,
  u64: 8,
  i64: 8,
  f64: 8,
};

/** Sequential, bounds-checked reads of a file's header, buffered in chunks. */
class HeaderCursor {
  pos = 0;
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly fail: (what: string) => never,
  ) {}

  get remaining(): number {
    return this.size - this.pos;
  }

  /** `n` bytes at the cursor (a view valid until the next call). */
  take(n: number, what: string): Buffer {
    if (n > this.remaining) this.fail(`${what} runs past the end of the file (${n} bytes at offset ${this.pos}, file ${this.size})`);
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) {
      const len = Math.min(this.size - this.pos, Math.max(n, 1 << 20));
      this.buf = Buffer.alloc(len);
      readSync(this.fd, this.buf, 0, len, this.pos);
      this.bufStart = this.pos;
    }
    const at = this.pos - this.bufStart;
    this.pos += n;
    return this.buf.subarray(at, at + n);
  }

  u32(what: string): number {
    return this.take(4, what).readUInt32LE(0);
  }

  /** A u64 that must fit a JavaScript number (counts, lengths, offsets). */
  u64(what: string): number {
    const v = this.take(8, what).readBigUInt64LE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} is beyond any file`);
    return Number(v);
  }

  string(what: string): string {
    const len = this.u64(`${what}'s length`);
    return this.take(len, what).toString('utf8');
  }

  scalar(type: GgufScalarType, what: string): GgufScalar {
    if (type === 'string') return this.string(what);
    const b = this.take(SCALAR_BYTES[type], what);
    switch (type) {
      case 'u8':
        return b.readUInt8(0);
      case 'i8':
        return b.readInt8(0);
      case 'u16':
        return b.readUInt16LE(0);
      case 'i16':
        return b.readInt16LE(0);
      case 'u32':
        return b.readUInt32LE(0);
      case 'i32':
        return b.readInt32LE(0);
      case 'f32':
        return b.readFloatLE(0);
      case 'bool':
        return b.readUInt8(0) !== 0;
      case 'u64':
        return b.readBigUInt64LE(0);
      case 'i64':
        return b.readBigInt64LE(0);
      case 'f64':
        return b.readDoubleLE(0);
    }
  }
}

function valueType(id: number, what: string, fail: (what: string) => never): (typeof GGUF_VALUE_TYPES)[number] {
  const t = GGUF_VALUE_TYPES[id];
  if (t === undefined) fail(`${what} has unknown value type ${id}`);
  return t;
}

/** The smallest encoding of one value of `type`, to bound counts by the bytes left. */
const minBytes = (type: GgufScalarType) => (type === 'string' ? 8 : SCALAR_BYTES[type]);

function readValue(c: HeaderCursor, key: string, fail: (what: string) => never): GgufValue {
  const type = valueType(c.u32(`metadata "${key}"'s type`), `metadata "${key}"`, fail);
  if (type !== 'array') return { type, value: c.scalar(type, `metadata "${key}"`) };
  const itemType = valueType(c.u32(`metadata "${key}"'s item type`), `metadata "${key}"'s items`, fail);
  if (itemType === 'array') fail(`metadata "${key}" is an array of arrays, which llmopt does not read`);
  const count = c.u64(`metadata "${key}"'s count`);
  if (count * minBytes(itemType) > c.remaining) fail(`metadata "${key}" claims ${count} items, more than the file holds`);
  const value: GgufScalar[] = new Array(count);
  for (let i = 0; i < count; i++) value[i] = c.scalar(itemType, `metadata "${key}"[${i}]`);
  return { type, itemType, value };
}

/** Reads and validates a GGUF file's header (metadata and tensor infos); tensor data stays on disk. */
export function readGgufHeader(path: string): GgufFile {
  const fail: (what: string) => never = (what) => {
    throw new InputError(`${path}: not a valid GGUF file: ${what}`);
  };
  if (!existsSync(path)) throw new InputError(`${path}: no such file`);
  if (statSync(path).isDirectory()) throw new InputError(`${path}: is a folder, not a GGUF file`);
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const c = new HeaderCursor(fd, size, fail);
    if (size < 4 || c.u32('magic') !== GGUF_MAGIC) fail('bad magic (expected "GGUF")');
    const version = c.u32('version');
    if (version !== 2 && version !== 3) fail(`version ${version} (llmopt reads GGUF versions 2 and 3)`);
    const tensorCount = c.u64('tensor count');
    const kvCount = c.u64('metadata count');
    // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor info 8 + 4 + 4 + 8.
    if (kvCount * 13 > c.remaining) fail(`metadata count ${kvCount} is more than the file can hold`);
    if (tensorCount * 24 > c.remaining) fail(`tensor count ${tensorCount} is more than the file can hold`);
    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < kvCount; i++) {
      const key = c.string(`metadata key ${i}`);
      if (metadata.has(key)) fail(`metadata key "${key}" appears twice`);
      metadata.set(key, readValue(c, key, fail));
    }
    const alignValue = metadata.get('general.alignment');
    let alignment = GGUF_DEFAULT_ALIGNMENT;
    if (alignValue !== undefined) {
      if (alignValue.type !== 'u32') fail(`general.alignment is ${alignValue.type}, expected u32`);
      alignment = alignValue.value as number;
      if (alignment === 0 || (alignment & (alignment - 1)) !== 0) fail(`general.alignment ${alignment} is not a power of two`);
    }
    const infos: Array<Omit<GgufTensorInfo, 'offset'> & { relOffset: number }> = [];
    const names = new Set<string>();
    for (let i = 0; i < tensorCount; i++) {
      const name = c.string(`tensor ${i}'s name`);
      if (names.has(name)) fail(`tensor "${name}" appears twice`);
      names.add(name);
      const nDims = c.u32(`tensor "${name}"'s dimension count`);
      if (nDims < 1 || nDims > MAX_DIMS) fail(`tensor "${name}" has ${nDims} dimensions (1 to ${MAX_DIMS})`);
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) dims.push(c.u64(`tensor "${name}"'s dimension ${d}`));
      const typeId = c.u32(`tensor "${name}"'s type`);
      const type = ggmlTypeOf(typeId);
      if (type === undefined) fail(`tensor "${name}" has ggml type ${ggmlTypeName(typeId)} (id ${typeId}), which llmopt does not read`);
      const relOffset = c.u64(`tensor "${name}"'s offset`);
      const elements = dims.reduce((a, b) => a * b, 1);
      if (dims.some((d) => d === 0) || !Number.isSafeInteger(elements)) fail(`tensor "${name}" has dimensions [${dims}]`);
      if (dims[0]! % GGML_TYPES[type].blockSize !== 0) {
        fail(`tensor "${name}" rows of ${dims[0]} are not whole ${type} blocks of ${GGML_TYPES[type].blockSize}`);
      }
      if (relOffset % alignment !== 0) fail(`tensor "${name}"'s offset ${relOffset} is not a multiple of the alignment ${alignment}`);
      infos.push({ name, shape: dims.reverse(), type, relOffset, bytes: tensorBytes(type, elements) });
    }
    const dataOffset = Math.ceil(c.pos / alignment) * alignment;
    const tensors: GgufTensorInfo[] = [];
    const byOffset = [...infos].sort((a, b) => a.relOffset - b.relOffset);
    for (let i = 0; i < byOffset.length; i++) {
      const t = byOffset[i]!;
      if (dataOffset + t.relOffset + t.bytes > size)
        fail(`tensor "${t.name}"'s data (${t.bytes} bytes at ${t.relOffset}) runs past the end of the file`);
      const next = byOffset[i + 1];
      if (next && t.relOffset + t.bytes > next.relOffset) fail(`tensors "${t.name}" and "${next.name}" overlap`);
    }
    for (const { relOffset, ...t } of infos) tensors.push({ ...t, offset: dataOffset + relOffset });
    return { path, version, alignment, metadata, tensors, dataOffset, fileBytes: size };
  } finally {
    closeSync(fd);
  }
}

/** Reads one tensor's raw bytes (in its ggml type's layout). */
export async function readGgufTensor(file: GgufFile, tensor: GgufTensorInfo): Promise<Uint8Array> {
  const handle = await open(file.path, 'r');
  try {
    const out = new Uint8Array(tensor.bytes);
    const { bytesRead } = await handle.read(out, 0, tensor.bytes, tensor.offset);
    if (bytesRead !== tensor.bytes) throw new InputError(`${file.path}: tensor "${tensor.name}" is truncated`);
    return out;
  } finally {
    await handle.close();
  }
}

/** A tensor to write: its data is produced only when its turn comes, so one tensor is in memory at a time. */
export interface GgufTensorToWrite {
  name: string;
  shape: number[];
  type: GgmlType;
  data: () => Promise<Uint8Array> | Uint8Array;
}

/** Growable little-endian byte builder for the header. */
class HeaderBuilder {
  private chunks: Buffer[] = [];
  length = 0;
  private push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
  scalar(type: GgufScalarType, v: GgufScalar, key: string): void {
    if (type === 'string') {
      if (typeof v !== 'string') throw new TypeError(`GGUF metadata "${key}": expected a string, got ${typeof v}`);
      this.string(v);
      return;
    }
    const b = Buffer.alloc(SCALAR_BYTES[type]);
    const n = typeof v === 'boolean' ? Number(v) : v;
    switch (type) {
      case 'u8':
        b.writeUInt8(Number(n));
        break;
      case 'i8':
        b.writeInt8(Number(n));
        break;
      case 'u16':
        b.writeUInt16LE(Number(n));
        break;
      case 'i16':
        b.writeInt16LE(Number(n));
        break;
      case 'u32':
        b.writeUInt32LE(Number(n));
        break;
      case 'i32':
        b.writeInt32LE(Number(n));
        break;
      case 'f32':
        b.writeFloatLE(Number(n));
        break;
      case 'bool':
        b.writeUInt8(n ? 1 : 0);
        break;
      case 'u64':
        b.writeBigUInt64LE(BigInt(n));
        break;
      case 'i64':
        b.writeBigInt64LE(BigInt(n));
        break;
      case 'f64':
        b.writeDoubleLE(Number(n));
        break;
    }
    this.push(b);
  }
  pad(alignment: number): void {
    const extra = (alignment - (this.length % alignment)) % alignment;
    if (extra > 0) this.push(Buffer.alloc(extra));
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** Refuses to replace something that is not a GGUF file (a folder, or a file of another kind). */
function checkReplaceableFile(target: string): void {
  if (!existsSync(target)) return;
  if (statSync(target).isDirectory()) throw new InputError(`${target}: is a folder; a GGUF output is one file (choose another -o)`);
  const fd = openSync(target, 'r');
  try {
    const magic = Buffer.alloc(4);
    const n = readSync(fd, magic, 0, 4, 0);
    if (n === 4 && magic.readUInt32LE(0) === GGUF_MAGIC) return;
  } finally {
    closeSync(fd);
  }
  throw new InputError(`${target}: exists and is not a GGUF file; choose another -o or remove it`);
}

/**
 * Writes a GGUF v3 file: metadata in the given order, tensor infos, then each tensor's data as it is
 * produced, aligned. Everything goes to `.NAME.tmp-PID-STAMP` beside the target, renamed at the end
 * (removed on failure), so a failed or killed write never leaves a half-written file.
 */
export async function writeGguf(
  target: string,
  metadata: Array<[string, GgufValue]>,
  tensors: GgufTensorToWrite[],
  onTensor?: (done: number, total: number) => void,
): Promise<{ bytes: number }> {
  const abs = resolve(target);
  checkReplaceableFile(abs);
  const alignEntry = metadata.find(([k]) => k === 'general.alignment');
  const alignment = alignEntry ? Number(alignEntry[1].value) : GGUF_DEFAULT_ALIGNMENT;
  const header = new HeaderBuilder();
  header.u32(GGUF_MAGIC);
  header.u32(GGUF_VERSION);
  header.u64(tensors.length);
  header.u64(metadata.length);
  for (const [key, v] of metadata) {
    header.string(key);
    header.u32(GGUF_VALUE_TYPES.indexOf(v.type));
    if (v.type === 'array') {
      header.u32(GGUF_VALUE_TYPES.indexOf(v.itemType));
      header.u64(v.value.length);
      for (const item of v.value) header.scalar(v.itemType, item, key);
    } else {
      header.scalar(v.type, v.value, key);
    }
  }
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const elements = t.shape.reduce((a, b) => a * b, 1);
    const cols = t.shape.at(-1)!;
    if (cols % GGML_TYPES[t.type].blockSize !== 0) {
      throw new InputError(`tensor "${t.name}": rows of ${cols} are not whole ${t.type} blocks of ${GGML_TYPES[t.type].blockSize}`);
    }
    const bytes = tensorBytes(t.type, elements);
    header.string(t.name);
    header.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) header.u64(d);
    header.u32(GGML_TYPES[t.type].id);
    header.u64(offset);
    sizes.push(bytes);
    offset += Math.ceil(bytes / alignment) * alignment;
  }
  header.pad(alignment);
  const parent = dirname(abs);
  mkdirSync(parent, { recursive: true });
  removeStaleTempFolders(parent);
  const tmp = join(parent, `.${basename(abs)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  const handle = await open(tmp, 'w');
  try {
    const head = header.bytes();
    let pos = 0;
    await handle.write(head, 0, head.length, pos);
    pos += head.length;
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      const data = await t.data();
      if (data.length !== sizes[i]) {
        throw new Error(`GGUF writer: tensor "${t.name}" produced ${data.length} bytes, its ${t.type} info says ${sizes[i]}`);
      }
      await handle.write(data, 0, data.length, pos);
      pos += Math.ceil(data.length / alignment) * alignment;
      onTensor?.(i + 1, tensors.length);
    }
    // The last tensor's padding: the file ends on an aligned boundary, as ggml's writer leaves it.
    await handle.truncate(pos);
    await handle.close();
    renameSync(tmp, abs);
    return { bytes: pos };
  } catch (e) {
    await handle.close().catch(() => {});
    rmSync(tmp, { force: true });
    throw e;
  }
}
