// Reading and writing safetensors files and Hugging Face checkpoint folders (single file or sharded).
// Readers load only headers up front and fetch each tensor with a positioned read; writers stream one tensor at a time.

import { closeSync, existsSync, openSync, promises as fs, readFileSync, readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { InputError } from '../core/errors.js';
import { DTYPE_BYTES, isDType, toFloat32, type DType } from './dtype.js';

/** Where one tensor lives and what it holds. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  byteLength: number;
  /** Absolute byte offset of the tensor's data in `file`. */
  fileOffset: number;
  /** Path of the safetensors file holding the tensor. */
  file: string;
}

/** What the writers need to know of a tensor before its bytes are produced. */
export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
}

/** Supplies a tensor's bytes on demand, so writers hold one tensor in memory at a time. */
export type TensorProducer = (name: string) => Promise<Uint8Array> | Uint8Array;

/** Largest header llmopt accepts; real headers are a few megabytes at most. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Largest single read or write; Node's file calls take 32-bit lengths. */
const IO_CHUNK_BYTES = 1 << 30;

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, size) => product * size, 1);
}

/** Bytes a tensor of this dtype and shape occupies. */
export function tensorByteLength(dtype: DType, shape: readonly number[]): number {
  return elementCount(shape) * DTYPE_BYTES[dtype];
}

async function readExactly(handle: FileHandle, target: Uint8Array, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const length = Math.min(IO_CHUNK_BYTES, target.byteLength - done);
    const { bytesRead } = await handle.read(target, done, length, position + done);
    if (bytesRead === 0) throw new InputError(`${file}: unexpected end of file at byte ${position + done}`);
    done += bytesRead;
  }
}

async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const length = Math.min(IO_CHUNK_BYTES, bytes.byteLength - done);
    const { bytesWritten } = await handle.write(bytes, done, length, position + done);
    done += bytesWritten;
  }
}

/** One safetensors file, opened with its header parsed and validated; tensor data is read on demand. */
export class SafetensorsFile {
  private closed = false;

  private constructor(
    /** Path the file was opened with. */
    readonly path: string,
    /** The header's `__metadata__` (empty when absent). */
    readonly metadata: Record<string, string>,
    /** Tensors in the order their data appears in the file. */
    readonly tensors: Map<string, TensorInfo>,
    private readonly handle: FileHandle,
  ) {}

  /** Opens `file` and validates its header and layout; throws {@link InputError} on any inconsistency. */
  static async open(file: string): Promise<SafetensorsFile> {
    let handle: FileHandle;
    try {
      handle = await fs.open(file, 'r');
    } catch (error) {
      throw new InputError(`cannot open ${file}: ${(error as Error).message}`);
    }
    try {
      const { size } = await handle.stat();
      const { metadata, tensors } = await readHeader(handle, file, size);
      return new SafetensorsFile(file, metadata, tensors, handle);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /** Header entry of `name`; throws {@link InputError} naming the tensor and file when it is absent. */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new InputError(`${this.path}: no tensor named "${name}"`);
    return info;
  }

  /** The tensor's bytes exactly as stored (little-endian), in a new buffer of their own. */
  async readRaw(name: string): Promise<Uint8Array> {
    const info = this.info(name);
    const bytes = new Uint8Array(info.byteLength);
    await readExactly(this.handle, bytes, info.fileOffset, this.path);
    return bytes;
  }

  /** The tensor's values converted to float32. */
  async readFloat32(name: string): Promise<Float32Array> {
    const info = this.info(name);
    const raw = await this.readRaw(name);
    // readRaw's buffer is fresh and starts at offset 0, so F32 data can be viewed rather than copied.
    if (info.dtype === 'F32') return new Float32Array(raw.buffer, 0, raw.byteLength / 4);
    return toFloat32(raw, info.dtype);
  }

  /** Releases the file handle; safe to call more than once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}

async function readHeader(
  handle: FileHandle,
  file: string,
  size: number,
): Promise<{ metadata: Record<string, string>; tensors: Map<string, TensorInfo> }> {
  if (size < 8) throw new InputError(`${file}: too short to be a safetensors file (${size} bytes)`);
  const prefix = new Uint8Array(8);
  await readExactly(handle, prefix, 0, file);
  const declared = new DataView(prefix.buffer).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw new InputError(`${file}: header length ${declared} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (declared > BigInt(size - 8)) {
    throw new InputError(`${file}: header length ${declared} exceeds the file's ${size - 8} bytes after the length`);
  }
  const headerBytes = new Uint8Array(Number(declared));
  await readExactly(handle, headerBytes, 8, file);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (error) {
    throw new InputError(`${file}: header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (!isPlainObject(header)) throw new InputError(`${file}: header is not a JSON object`);

  const dataStart = 8 + headerBytes.byteLength;
  const dataSize = size - dataStart;
  const metadata = parseMetadata(header.__metadata__, file);
  const entries: Array<TensorInfo & { begin: number; end: number }> = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const where = `${file}: tensor "${name}"`;
    if (!isPlainObject(value)) throw new InputError(`${where}: header entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = value;
    if (!isDType(dtype)) throw new InputError(`${where}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new InputError(`${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      throw new InputError(`${where}: data_offsets ${JSON.stringify(offsets)} is not a [begin, end] pair`);
    }
    const [begin, end] = offsets as [number, number];
    const expected = tensorByteLength(dtype, shape);
    if (end - begin !== expected) {
      throw new InputError(`${where}: data_offsets span ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} needs ${expected}`);
    }
    entries.push({ name, dtype, shape, byteLength: expected, fileOffset: dataStart + begin, file, begin, end });
  }

  // The data region must be tiled exactly: no overlaps, no holes, nothing past or short of the end.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous: string | undefined;
  for (const entry of entries) {
    const where = `${file}: tensor "${entry.name}"`;
    if (entry.end > dataSize) {
      throw new InputError(
        `${where}: data range [${entry.begin}, ${entry.end}) runs past the end of the ${dataSize}-byte data region (truncated file?)`,
      );
    }
    if (entry.begin < covered) {
      throw new InputError(`${where}: data range [${entry.begin}, ${entry.end}) overlaps tensor "${previous}"`);
    }
    if (entry.begin > covered) {
      throw new InputError(`${where}: data range starts at ${entry.begin}, leaving a hole at [${covered}, ${entry.begin})`);
    }
    covered = entry.end;
    previous = entry.name;
  }
  if (covered !== dataSize) {
    throw new InputError(`${file}: ${dataSize - covered} bytes after the last tensor's data are not claimed by any tensor`);
  }

  const tensors = new Map<string, TensorInfo>();
  for (const { begin: _begin, end: _end, ...info } of entries) tensors.set(info.name, info);
  return { metadata, tensors };
}

function parseMetadata(value: unknown, file: string): Record<string, string> {
  if (value === undefined) return {};
  if (!isPlainObject(value)) throw new InputError(`${file}: __metadata__ is not a JSON object`);
  const metadata: Record<string, string> = {};
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') throw new InputError(`${file}: __metadata__ value of "${key}" is not a string`);
    metadata[key] = entry;
  }
  return metadata;
}

/** A Hugging Face model folder's weights: `model.safetensors`, or shards listed by `model.safetensors.index.json`. */
export class Checkpoint {
  private readonly order: string[];

  private constructor(
    /** The model folder. */
    readonly dir: string,
    private readonly files: SafetensorsFile[],
    private readonly owner: Map<string, SafetensorsFile>,
    /** Name as read -> name as stored, where they differ (see renamed). */
    private readonly stored: ReadonlyMap<string, string> = new Map(),
  ) {
    const readName = new Map([...stored].map(([read, name]) => [name, read]));
    this.order = files.flatMap((file) => [...file.tensors.keys()].map((name) => readName.get(name) ?? name));
  }

  /**
   * The same files with every tensor read under `rename(storedName)`: a checkpoint that wraps the model under a
   * prefix (Gemma 3 multimodal's language_model.*) read under the text model's names. Shares the open handles.
   */
  renamed(rename: (stored: string) => string): Checkpoint {
    const owner = new Map<string, SafetensorsFile>();
    const stored = new Map<string, string>();
    for (const [name, file] of this.owner) {
      const read = rename(name);
      if (owner.has(read)) throw new InputError(`${this.dir}: tensors "${stored.get(read) ?? read}" and "${name}" both read as "${read}"`);
      owner.set(read, file);
      if (read !== name) stored.set(read, name);
    }
    return new Checkpoint(this.dir, this.files, owner, stored);
  }

  /** Opens the checkpoint in `dir`, validating every file and (for shards) the index against the shards. */
  static async open(dir: string): Promise<Checkpoint> {
    const single = path.join(dir, SINGLE_FILE);
    if (await exists(single)) {
      const file = await SafetensorsFile.open(single);
      return new Checkpoint(dir, [file], new Map([...file.tensors.keys()].map((name) => [name, file])));
    }
    const indexPath = path.join(dir, INDEX_FILE);
    if (!(await exists(indexPath))) throw new InputError(`no ${SINGLE_FILE} or ${INDEX_FILE} in ${dir}`);
    const weightMap = await readWeightMap(indexPath);

    const shardNames = [...new Set(Object.values(weightMap))].sort();
    const files: SafetensorsFile[] = [];
    try {
      for (const shard of shardNames) {
        const shardPath = path.join(dir, shard);
        if (!(await exists(shardPath))) throw new InputError(`${indexPath}: shard file ${shard} does not exist`);
        files.push(await SafetensorsFile.open(shardPath));
      }
      const owner = new Map<string, SafetensorsFile>();
      for (const [name, shard] of Object.entries(weightMap)) {
        const file = files[shardNames.indexOf(shard)]!;
        if (!file.tensors.has(name)) {
          throw new InputError(`${indexPath}: tensor "${name}" is mapped to ${shard}, which does not contain it`);
        }
        owner.set(name, file);
      }
      // Each tensor must live in exactly one shard: the one the index names.
      for (const file of files) {
        for (const name of file.tensors.keys()) {
          const mapped = weightMap[name];
          if (mapped === undefined) {
            throw new InputError(`${indexPath}: tensor "${name}" in ${path.basename(file.path)} is missing from weight_map`);
          }
          if (owner.get(name) !== file) {
            throw new InputError(
              `${indexPath}: tensor "${name}" appears in ${path.basename(file.path)} but weight_map places it in ${mapped}`,
            );
          }
        }
      }
      return new Checkpoint(dir, files, owner);
    } catch (error) {
      await Promise.all(files.map((file) => file.close()));
      throw error;
    }
  }

  /** Tensor names in a stable order: shard file order, then position within the file. */
  names(): string[] {
    return [...this.order];
  }

  /** Whether the checkpoint holds a tensor called `name`. */
  has(name: string): boolean {
    return this.owner.has(name);
  }

  /** Header entry of `name`; throws {@link InputError} naming the tensor when it is absent. */
  info(name: string): TensorInfo {
    const stored = this.stored.get(name);
    return stored === undefined ? this.fileOf(name).info(name) : { ...this.fileOf(name).info(stored), name };
  }

  /** The tensor's bytes exactly as stored. */
  readRaw(name: string): Promise<Uint8Array> {
    return this.fileOf(name).readRaw(this.stored.get(name) ?? name);
  }

  /** The tensor's values converted to float32. */
  readFloat32(name: string): Promise<Float32Array> {
    return this.fileOf(name).readFloat32(this.stored.get(name) ?? name);
  }

  /** Bytes of tensor data across all files. */
  get totalBytes(): number {
    let total = 0;
    for (const file of this.files) for (const info of file.tensors.values()) total += info.byteLength;
    return total;
  }

  /** Closes every file handle. */
  async close(): Promise<void> {
    await Promise.all(this.files.map((file) => file.close()));
  }

  private fileOf(name: string): SafetensorsFile {
    const file = this.owner.get(name);
    if (!file) throw new InputError(`checkpoint ${this.dir} has no tensor named "${name}"`);
    return file;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * The tensor names of the checkpoint in `dir` from its index or its file header alone, without
 * validating anything (Checkpoint.open does): what config readers look at to tell which optional
 * tensors a checkpoint holds. null when there is no readable checkpoint there (an artifact folder).
 */
export function tensorNamesIn(dir: string): Set<string> | null {
  try {
    const indexPath = path.join(dir, INDEX_FILE);
    if (existsSync(indexPath)) return new Set(Object.keys(JSON.parse(readFileSync(indexPath, 'utf8')).weight_map ?? {}));
    const single = path.join(dir, SINGLE_FILE);
    if (!existsSync(single)) return null;
    const fd = openSync(single, 'r');
    try {
      const len = Buffer.alloc(8);
      readSync(fd, len, 0, 8, 0);
      const header = Buffer.alloc(Number(len.readBigUInt64LE(0)));
      readSync(fd, header, 0, header.length, 8);
      return new Set(Object.keys(JSON.parse(header.toString('utf8'))).filter((k) => k !== '__metadata__'));
    } finally {
      closeSync(fd);
    }
  } catch {
    return null;
  }
}

async function readWeightMap(indexPath: string): Promise<Record<string, string>> {
  let index: unknown;
  try {
    index = JSON.parse(await fs.readFile(indexPath, 'utf8'));
  } catch (error) {
    throw new InputError(`${indexPath}: not readable JSON (${(error as Error).message})`);
  }
  const weightMap = isPlainObject(index) ? index.weight_map : undefined;
  if (!isPlainObject(weightMap)) throw new InputError(`${indexPath}: weight_map is missing or not an object`);
  for (const [name, shard] of Object.entries(weightMap)) {
    // Shards sit beside the index; a path elsewhere is a corrupt or hostile index.
    if (typeof shard !== 'string' || shard === '' || path.basename(shard) !== shard) {
      throw new InputError(`${indexPath}: weight_map entry of "${name}" is not a file name in the same folder`);
    }
  }
  return weightMap as Record<string, string>;
}

function validateEntries(entries: readonly TensorEntry[], file: string): void {
  const seen = new Set<string>();
  for (const { name, dtype, shape } of entries) {
    if (name === '' || name === '__metadata__') throw new Error(`${file}: invalid tensor name "${name}"`);
    if (seen.has(name)) throw new Error(`${file}: tensor "${name}" listed twice`);
    seen.add(name);
    if (!isDType(dtype)) throw new Error(`${file}: tensor "${name}" has unknown dtype ${String(dtype)}`);
    if (!shape.every(isCount)) throw new Error(`${file}: tensor "${name}" has invalid shape ${JSON.stringify(shape)}`);
  }
}

/**
 * Writes a safetensors file: the header (entries in the given order, padded with spaces to a multiple of 8 bytes),
 * then each tensor's bytes as `produce` returns them, one tensor at a time. The file appears under `file` only
 * once complete. Throws if a produced buffer's length disagrees with its dtype and shape.
 */
export async function writeSafetensors(
  file: string,
  entries: TensorEntry[],
  produce: TensorProducer,
  metadata?: Record<string, string>,
): Promise<void> {
  validateEntries(entries, file);
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const { name, dtype, shape } of entries) {
    const byteLength = tensorByteLength(dtype, shape);
    header[name] = { dtype, shape, data_offsets: [offset, offset + byteLength] };
    offset += byteLength;
  }
  let json = JSON.stringify(header);
  const unpadded = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (unpadded % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.byteLength));

  const partial = `${file}.partial-${process.pid}`;
  const handle = await fs.open(partial, 'w');
  try {
    await writeFully(handle, prefix, 0);
    await writeFully(handle, headerBytes, 8);
    let position = 8 + headerBytes.byteLength;
    for (const { name, dtype, shape } of entries) {
      const bytes = await produce(name);
      const expected = tensorByteLength(dtype, shape);
      if (bytes.byteLength !== expected) {
        throw new Error(
          `${file}: tensor "${name}" produced ${bytes.byteLength} bytes but ${dtype} ${JSON.stringify(shape)} needs ${expected}`,
        );
      }
      await writeFully(handle, bytes, position);
      position += expected;
    }
    await handle.close();
    await fs.rename(partial, file);
  } catch (error) {
    await handle.close().catch(() => undefined);
    await fs.rm(partial, { force: true });
    throw error;
  }
}

/** Options of {@link writeShardedCheckpoint}. */
export interface ShardOptions {
  /** Largest tensor-data size of one shard; a single larger tensor gets a shard of its own. */
  maxShardBytes: number;
  /** `__metadata__` written into every shard's header. */
  metadata?: Record<string, string>;
}

/**
 * Writes checkpoint weights into `dir` the way Hugging Face does: one `model.safetensors` when everything fits
 * in `maxShardBytes`, else `model-0000K-of-0000N.safetensors` shards plus `model.safetensors.index.json`.
 * Returns the names of the files written.
 */
export async function writeShardedCheckpoint(
  dir: string,
  entries: TensorEntry[],
  produce: TensorProducer,
  options: ShardOptions,
): Promise<string[]> {
  if (!(options.maxShardBytes > 0)) throw new Error(`maxShardBytes must be positive, got ${options.maxShardBytes}`);
  validateEntries(entries, dir);
  const shards: TensorEntry[][] = [];
  let current: TensorEntry[] = [];
  let currentBytes = 0;
  for (const entry of entries) {
    const bytes = tensorByteLength(entry.dtype, entry.shape);
    if (current.length > 0 && currentBytes + bytes > options.maxShardBytes) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(entry);
    currentBytes += bytes;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);

  await fs.mkdir(dir, { recursive: true });
  // A leftover file of the other layout would change what Checkpoint.open reads, so it goes.
  if (shards.length === 1) {
    await fs.rm(path.join(dir, INDEX_FILE), { force: true });
    await writeSafetensors(path.join(dir, SINGLE_FILE), entries, produce, options.metadata);
    return [SINGLE_FILE];
  }
  await fs.rm(path.join(dir, SINGLE_FILE), { force: true });
  const count = String(shards.length).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  const written: string[] = [];
  let totalSize = 0;
  for (const [k, shard] of shards.entries()) {
    const name = `model-${String(k + 1).padStart(5, '0')}-of-${count}.safetensors`;
    await writeSafetensors(path.join(dir, name), shard, produce, options.metadata);
    for (const entry of shard) {
      weightMap[entry.name] = name;
      totalSize += tensorByteLength(entry.dtype, entry.shape);
    }
    written.push(name);
  }
  const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const index = { metadata: { total_size: totalSize }, weight_map: sortedMap };
  await fs.writeFile(path.join(dir, INDEX_FILE), `${JSON.stringify(index, null, 2)}\n`);
  written.push(INDEX_FILE);
  return written;
}
