// The GGUF container on its own: what llmopt writes reads back, and llama.cpp's converter's files read.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { InputError } from '../../src/core/errors.js';
import { readGgufHeader, readGgufTensor, writeGguf } from '../../src/formats/gguf/file.js';
import { needsSharedModel, sharedModel, tempDir } from '../support.js';

test('a written GGUF reads back: metadata in order, reversed dims restored, aligned data', async () => {
  const dir = tempDir();
  const path = join(dir, 'm.gguf');
  const a = new Float32Array([1, 2, 3, 4, 5, 6]);
  const b = new Uint8Array(new Float32Array([7, 8, 9]).buffer);
  await writeGguf(
    path,
    [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['llama.block_count', { type: 'u32', value: 2 }],
      ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: ['a', 'é'] }],
      ['x.eps', { type: 'f32', value: 1.5 }],
    ],
    [
      { name: 'a', shape: [2, 3], type: 'F32', data: () => new Uint8Array(a.buffer) },
      { name: 'b', shape: [3], type: 'F32', data: () => b },
    ],
  );
  assert.deepEqual(readdirSync(dir), ['m.gguf'], 'no temporary file left beside the output');
  const file = readGgufHeader(path);
  assert.equal(file.version, 3);
  assert.deepEqual([...file.metadata.keys()], ['general.architecture', 'llama.block_count', 'tokenizer.ggml.tokens', 'x.eps']);
  assert.deepEqual(file.metadata.get('tokenizer.ggml.tokens')?.value, ['a', 'é']);
  assert.deepEqual(
    file.tensors.map((t) => [t.name, t.shape, t.offset % 32]),
    [
      ['a', [2, 3], 0],
      ['b', [3], 0],
    ],
  );
  assert.deepEqual([...new Float32Array((await readGgufTensor(file, file.tensors[1]!)).buffer)], [7, 8, 9]);
});

test('a failed write leaves nothing behind', async () => {
  const dir = tempDir();
  const fail = () => {
    throw new Error('boom');
  };
  await assert.rejects(writeGguf(join(dir, 'm.gguf'), [], [{ name: 'a', shape: [4], type: 'F32', data: fail }]), /boom/);
  assert.deepEqual(readdirSync(dir), []);
});

test("llama.cpp's converter's F32 GGUF reads", { skip: needsSharedModel('qwen2-tiny') }, () => {
  const path = join(sharedModel('qwen2-tiny'), 'qwen2-tiny-f32.gguf');
  assert.ok(existsSync(path));
  const file = readGgufHeader(path);
  assert.equal(file.metadata.get('general.architecture')?.value, 'qwen2');
  const embd = file.tensors.find((t) => t.name === 'token_embd.weight');
  assert.deepEqual(embd?.shape, [512, 64]);
});

/** A small seeded generator (mulberry32), so a failing mutation can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('mutated and truncated headers are refused with one line naming the file, never a crash or a hang', async () => {
  const dir = tempDir();
  const good = join(dir, 'good.gguf');
  await writeGguf(
    good,
    [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['general.alignment', { type: 'u32', value: 32 }],
      ['llama.block_count', { type: 'u32', value: 1 }],
      ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: ['<s>', 'a', 'b'] }],
      ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: [0, -1, -2] }],
    ],
    [
      { name: 'token_embd.weight', shape: [3, 32], type: 'F32', data: () => new Uint8Array(3 * 32 * 4) },
      { name: 'blk.0.attn_q.weight', shape: [32, 32], type: 'Q8_0', data: () => new Uint8Array(32 * 34) },
    ],
  );
  const bytes = readFileSync(good);
  const headerEnd = readGgufHeader(good).dataOffset;
  const random = rng(20261201);
  const bad = join(dir, 'bad.gguf');
  let refused = 0;
  const started = Date.now();
  for (let trial = 0; trial < 1500; trial++) {
    let mutated: Buffer;
    if (trial % 5 === 0) {
      mutated = bytes.subarray(0, Math.floor(random() * bytes.length));
    } else {
      mutated = Buffer.from(bytes);
      const flips = 1 + Math.floor(random() * 4);
      for (let f = 0; f < flips; f++) {
        const at = Math.floor(random() * headerEnd);
        // Half the time a random byte; otherwise a large value in a length/count position.
        mutated[at] = random() < 0.5 ? Math.floor(random() * 256) : 0xff;
      }
    }
    writeFileSync(bad, mutated);
    try {
      readGgufHeader(bad);
    } catch (e) {
      assert.ok(e instanceof InputError, `trial ${trial}: ${(e as Error).stack}`);
      assert.ok(e.message.startsWith(`${bad}: `), `trial ${trial}: ${e.message}`);
      assert.ok(!e.message.includes('\n'), `trial ${trial}: one line: ${e.message}`);
      refused++;
    }
  }
  assert.ok(refused > 500, `most mutations are refused (${refused} of 1500)`);
  assert.ok(Date.now() - started < 20_000, 'bounded in time');
});

test('each kind of broken header gets its own message', async () => {
  const dir = tempDir();
  const path = join(dir, 'm.gguf');
  await writeGguf(
    path,
    [['general.architecture', { type: 'string', value: 'llama' }]],
    [{ name: 'w', shape: [2, 32], type: 'Q4_0', data: () => new Uint8Array(2 * 18) }],
  );
  const good = readFileSync(path);
  const info = readGgufHeader(path);
  // An in-place edit of the header bytes.
  const edit = (write: (b: Buffer) => unknown) => (b: Buffer) => {
    write(b);
    return b;
  };
  const cases: Array<[string, (b: Buffer) => Buffer, RegExp]> = [
    ['bad magic', (b) => Buffer.concat([Buffer.from('GGUX'), b.subarray(4)]), /bad magic/],
    ['version', edit((b) => b.writeUInt32LE(7, 4)), /version 7/],
    ['tensor count', edit((b) => b.writeBigUInt64LE(1n << 40n, 8)), /tensor count/],
    ['metadata count', edit((b) => b.writeBigUInt64LE(1n << 40n, 16)), /metadata count/],
    ['string past the end', edit((b) => b.writeBigUInt64LE(1n << 30n, 24)), /runs past the end/],
    ['truncated data', (b) => b.subarray(0, info.dataOffset + 10), /runs past the end of the file/],
  ];
  // The tensor info's type id and offset sit at the end of the header, before the padding.
  const typeAt = good.indexOf(Buffer.from('w')) + 1 + 4 + 16;
  cases.push(['unknown type', edit((b) => b.writeUInt32LE(10, typeAt)), /ggml type Q2_K \(id 10\), which llmopt does not read/]);
  cases.push(['unaligned offset', edit((b) => b.writeBigUInt64LE(3n, typeAt + 4)), /offset 3 is not a multiple of the alignment 32/]);
  cases.push(['unknown value type', edit((b) => b.writeUInt32LE(99, 24 + 8 + 'general.architecture'.length)), /unknown value type 99/]);
  for (const [what, mutate, message] of cases) {
    const bad = join(dir, `${what.replaceAll(' ', '-')}.gguf`);
    writeFileSync(bad, mutate(Buffer.from(good)));
    assert.throws(
      () => readGgufHeader(bad),
      (e: Error) => e instanceof InputError && message.test(e.message),
      what,
    );
  }
});
