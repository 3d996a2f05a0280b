// Tests of the safetensors reader and writer: round trips, sharded checkpoints, and rejection of corrupt files.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../src/core/errors.js';
import { DTYPE_BYTES, fromFloat32, type DType } from '../../src/formats/dtype.js';
import { Checkpoint, SafetensorsFile, writeSafetensors, writeShardedCheckpoint, type TensorEntry } from '../../src/formats/safetensors.js';

let tmp: string;
before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'llmopt-safetensors-'));
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

// Deterministic bytes so every tensor's content is distinct and checkable.
function patternBytes(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed * 17 + 7) & 0xff;
  return bytes;
}

/** A safetensors file assembled by hand, so tests can make any header they like. */
async function writeRawFile(name: string, header: unknown, dataBytes: number, headerText?: string): Promise<string> {
  const file = path.join(tmp, name);
  const json = Buffer.from(headerText ?? JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.byteLength));
  await fs.writeFile(file, Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]));
  return file;
}

async function rejects(open: () => Promise<unknown>, ...fragments: string[]): Promise<void> {
  await assert.rejects(open, (error: unknown) => {
    assert.ok(error instanceof InputError, `expected InputError, got ${String(error)}`);
    assert.ok(!error.message.includes('\n'), 'message is one line');
    for (const fragment of fragments) assert.ok(error.message.includes(fragment), `"${error.message}" lacks "${fragment}"`);
    return true;
  });
}

test('every dtype round trips through the writer and reader', async () => {
  const dtypes = Object.keys(DTYPE_BYTES) as DType[];
  const entries: TensorEntry[] = dtypes.map((dtype, i) => ({ name: `t.${dtype}`, dtype, shape: [2, i + 1] }));
  entries.push({ name: 'empty', dtype: 'F32', shape: [0, 4] }, { name: 'scalar', dtype: 'I32', shape: [] });
  const contents = new Map(entries.map((e, i) => [e.name, patternBytes(DTYPE_BYTES[e.dtype] * e.shape.reduce((a, b) => a * b, 1), i)]));
  const file = path.join(tmp, 'all-dtypes.safetensors');
  await writeSafetensors(file, entries, (name) => contents.get(name)!);

  const bytes = await fs.readFile(file);
  assert.equal(Number(bytes.readBigUInt64LE(0)) % 8, 0, 'header padded to a multiple of 8');

  const st = await SafetensorsFile.open(file);
  try {
    assert.deepEqual(st.metadata, {});
    assert.deepEqual(
      [...st.tensors.keys()],
      entries.map((e) => e.name),
    );
    for (const entry of entries) {
      const info = st.tensors.get(entry.name)!;
      assert.equal(info.dtype, entry.dtype);
      assert.deepEqual(info.shape, entry.shape);
      assert.equal(info.file, file);
      assert.deepEqual(await st.readRaw(entry.name), contents.get(entry.name));
      assert.deepEqual(bytes.subarray(info.fileOffset, info.fileOffset + info.byteLength), Buffer.from(contents.get(entry.name)!));
    }
    const scalar = new Int32Array(contents.get('scalar')!.buffer)[0]!;
    assert.deepEqual([...(await st.readFloat32('scalar'))], [Math.fround(scalar)]);
  } finally {
    await st.close();
  }
});

test('float tensors and metadata read back', async () => {
  const values = new Float32Array([1, -2.5, 0.25, 1024, 3, -0.125]);
  const file = path.join(tmp, 'floats.safetensors');
  await writeSafetensors(
    file,
    [
      { name: 'a', dtype: 'F32', shape: [2, 3] },
      { name: 'b', dtype: 'BF16', shape: [6] },
      { name: 'c', dtype: 'F16', shape: [3, 2] },
    ],
    (name) => fromFloat32(values, name === 'a' ? 'F32' : name === 'b' ? 'BF16' : 'F16'),
    { format: 'pt', note: 'héllo' },
  );
  const st = await SafetensorsFile.open(file);
  try {
    assert.deepEqual(st.metadata, { format: 'pt', note: 'héllo' });
    for (const name of ['a', 'b', 'c']) assert.deepEqual(await st.readFloat32(name), values);
    await rejects(() => st.readRaw('missing'), 'floats.safetensors', 'missing');
  } finally {
    await st.close();
  }
});

test('writer rejects a produced buffer of the wrong length', async () => {
  const file = path.join(tmp, 'short.safetensors');
  await assert.rejects(
    writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [4] }], () => new Uint8Array(12)),
    /"w" produced 12 bytes/,
  );
  await assert.rejects(fs.access(file));
});

test('single-file checkpoint', async () => {
  const dir = path.join(tmp, 'single');
  const entries: TensorEntry[] = [
    { name: 'x', dtype: 'F32', shape: [4] },
    { name: 'y', dtype: 'F16', shape: [2] },
  ];
  const files = await writeShardedCheckpoint(dir, entries, (name) => patternBytes(name === 'x' ? 16 : 4, 1), {
    maxShardBytes: 1 << 20,
  });
  assert.deepEqual(files, ['model.safetensors']);
  const ckpt = await Checkpoint.open(dir);
  try {
    assert.deepEqual(ckpt.names(), ['x', 'y']);
    assert.equal(ckpt.totalBytes, 20);
    assert.ok(ckpt.has('x') && !ckpt.has('z'));
    assert.throws(
      () => ckpt.info('z'),
      (e: unknown) => e instanceof InputError && e.message.includes('"z"'),
    );
  } finally {
    await ckpt.close();
  }
});

test('sharded checkpoint round trips through the index', async () => {
  const dir = path.join(tmp, 'sharded');
  const entries: TensorEntry[] = ['b.weight', 'a.weight', 'c.weight', 'd.bias'].map((name, i) => ({
    name,
    dtype: i % 2 ? 'BF16' : 'F32',
    shape: [8, 4],
  }));
  const contents = new Map(entries.map((e, i) => [e.name, patternBytes(32 * DTYPE_BYTES[e.dtype], i)]));
  const files = await writeShardedCheckpoint(dir, entries, (name) => contents.get(name)!, {
    maxShardBytes: 200,
    metadata: { format: 'pt' },
  });
  assert.deepEqual(files, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
  const index = JSON.parse(await fs.readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(index.metadata.total_size, 128 + 64 + 128 + 64);
  assert.deepEqual(Object.keys(index.weight_map), ['a.weight', 'b.weight', 'c.weight', 'd.bias']);

  const ckpt = await Checkpoint.open(dir);
  try {
    assert.deepEqual(ckpt.names(), ['b.weight', 'a.weight', 'c.weight', 'd.bias']);
    assert.equal(ckpt.totalBytes, 384);
    for (const entry of entries) {
      assert.deepEqual(await ckpt.readRaw(entry.name), contents.get(entry.name));
      assert.equal((await ckpt.readFloat32(entry.name)).length, 32);
    }
    assert.equal(path.basename(ckpt.info('a.weight').file), 'model-00001-of-00002.safetensors');
    assert.equal(path.basename(ckpt.info('c.weight').file), 'model-00002-of-00002.safetensors');
  } finally {
    await ckpt.close();
  }
});

test('checkpoint folder without weights', async () => {
  const dir = await fs.mkdtemp(path.join(tmp, 'empty-'));
  await rejects(() => Checkpoint.open(dir), 'no model.safetensors or model.safetensors.index.json in', dir);
});

test('index referencing a missing shard or a tensor the shard lacks', async () => {
  const dir = path.join(tmp, 'bad-index');
  // Shard 1 holds p and q, shard 2 holds r.
  await writeShardedCheckpoint(
    dir,
    [
      { name: 'p', dtype: 'F32', shape: [16] },
      { name: 'q', dtype: 'F32', shape: [16] },
      { name: 'r', dtype: 'F32', shape: [32] },
    ],
    (name) => new Uint8Array(name === 'r' ? 128 : 64),
    { maxShardBytes: 128 },
  );
  const indexPath = path.join(dir, 'model.safetensors.index.json');
  const index = JSON.parse(await fs.readFile(indexPath, 'utf8'));
  const [first, second] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  assert.deepEqual(index.weight_map, { p: first, q: first, r: second });
  const reopen = async (weightMap: Record<string, string>, ...fragments: string[]): Promise<void> => {
    await fs.writeFile(indexPath, JSON.stringify({ ...index, weight_map: weightMap }));
    await rejects(() => Checkpoint.open(dir), 'model.safetensors.index.json', ...fragments);
  };

  await reopen({ p: first, q: first, r: 'model-00009-of-00009.safetensors' }, 'model-00009-of-00009.safetensors');
  await reopen({ p: first, q: second, r: second }, '"q"', second);
  await reopen({ p: first, r: second }, '"q"', 'weight_map');
  await reopen({ p: '../elsewhere.safetensors', q: first, r: second }, '"p"');

  await fs.writeFile(indexPath, JSON.stringify(index));
  const ckpt = await Checkpoint.open(dir);
  assert.deepEqual(ckpt.names(), ['p', 'q', 'r']);
  await ckpt.close();
});

test('header length beyond the limit or the file', async () => {
  const huge = path.join(tmp, 'huge-header.safetensors');
  const prefix = Buffer.alloc(16);
  prefix.writeBigUInt64LE(200n * 1024n * 1024n);
  await fs.writeFile(huge, prefix);
  await rejects(() => SafetensorsFile.open(huge), 'huge-header.safetensors', 'header length');

  const long = path.join(tmp, 'long-header.safetensors');
  prefix.writeBigUInt64LE(1000n);
  await fs.writeFile(long, prefix);
  await rejects(() => SafetensorsFile.open(long), 'long-header.safetensors', 'header length');

  const tiny = path.join(tmp, 'tiny.safetensors');
  await fs.writeFile(tiny, Buffer.alloc(3));
  await rejects(() => SafetensorsFile.open(tiny), 'tiny.safetensors');
});

test('header that is not a JSON object', async () => {
  const notJson = await writeRawFile('not-json.safetensors', null, 0, '{"a": [1, 2');
  await rejects(() => SafetensorsFile.open(notJson), 'not-json.safetensors', 'JSON');
  const array = await writeRawFile('array.safetensors', [1, 2], 0);
  await rejects(() => SafetensorsFile.open(array), 'array.safetensors', 'not a JSON object');
  const badUtf8 = path.join(tmp, 'bad-utf8.safetensors');
  await fs.writeFile(badUtf8, Buffer.from([2, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0x28]));
  await rejects(() => SafetensorsFile.open(badUtf8), 'bad-utf8.safetensors', 'UTF-8');
});

test('header entries with bad dtype, shape, offsets or metadata', async () => {
  const cases: Array<[string, unknown, number, string]> = [
    ['unknown-dtype', { w: { dtype: 'F4', shape: [2], data_offsets: [0, 1] } }, 1, 'unknown dtype'],
    ['bad-shape', { w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 8] } }, 8, 'shape'],
    ['float-shape', { w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 8] } }, 8, 'shape'],
    ['bad-offsets', { w: { dtype: 'F32', shape: [2], data_offsets: [8] } }, 8, 'data_offsets'],
    ['reversed-offsets', { w: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, 8, 'data_offsets'],
    ['length-mismatch', { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, 20, 'needs 24'],
    ['not-object', { w: 'F32' }, 0, 'not an object'],
  ];
  for (const [name, header, dataBytes, fragment] of cases) {
    const file = await writeRawFile(`${name}.safetensors`, header, dataBytes);
    await rejects(() => SafetensorsFile.open(file), `${name}.safetensors`, '"w"', fragment);
  }
  const meta = await writeRawFile('bad-metadata.safetensors', { __metadata__: { format: 1 } }, 0);
  await rejects(() => SafetensorsFile.open(meta), 'bad-metadata.safetensors', '__metadata__', 'format');
});

test('overlapping ranges, holes and unclaimed trailing bytes', async () => {
  const overlap = await writeRawFile(
    'overlap.safetensors',
    { a: { dtype: 'U8', shape: [8], data_offsets: [0, 8] }, b: { dtype: 'U8', shape: [8], data_offsets: [4, 12] } },
    12,
  );
  await rejects(() => SafetensorsFile.open(overlap), 'overlap.safetensors', '"b"', 'overlaps', '"a"');

  const hole = await writeRawFile(
    'hole.safetensors',
    { a: { dtype: 'U8', shape: [8], data_offsets: [0, 8] }, b: { dtype: 'U8', shape: [4], data_offsets: [12, 16] } },
    16,
  );
  await rejects(() => SafetensorsFile.open(hole), 'hole.safetensors', '"b"', 'hole');

  const leading = await writeRawFile('leading.safetensors', { a: { dtype: 'U8', shape: [4], data_offsets: [4, 8] } }, 8);
  await rejects(() => SafetensorsFile.open(leading), 'leading.safetensors', '"a"', 'hole');

  const trailing = await writeRawFile('trailing.safetensors', { a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] } }, 6);
  await rejects(() => SafetensorsFile.open(trailing), 'trailing.safetensors', '2 bytes');
});

test('truncated file names the tensor that runs past the end', async () => {
  const file = path.join(tmp, 'truncated.safetensors');
  await writeSafetensors(
    file,
    [
      { name: 'first', dtype: 'F32', shape: [16] },
      { name: 'second', dtype: 'F32', shape: [16] },
    ],
    () => new Uint8Array(64),
  );
  const { size } = await fs.stat(file);
  await fs.truncate(file, size - 10);
  await rejects(() => SafetensorsFile.open(file), 'truncated.safetensors', '"second"', 'past the end');

  // A shard truncated inside a checkpoint is reported the same way.
  const dir = path.join(tmp, 'truncated-shards');
  await writeShardedCheckpoint(
    dir,
    [
      { name: 'p', dtype: 'F32', shape: [16] },
      { name: 'q', dtype: 'F32', shape: [16] },
    ],
    () => new Uint8Array(64),
    { maxShardBytes: 64 },
  );
  const shard = path.join(dir, 'model-00002-of-00002.safetensors');
  await fs.truncate(shard, (await fs.stat(shard)).size - 1);
  await rejects(() => Checkpoint.open(dir), 'model-00002-of-00002.safetensors', '"q"');
});
