// The GGUF container on its own: what llmopt writes reads back, and llama.cpp's converter's files read.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
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
