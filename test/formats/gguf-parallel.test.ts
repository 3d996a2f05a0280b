// The GGUF encoders on worker threads: the same bytes as quantizeRows on one thread for every block family,
// whatever the thread count and however the rows fall into chunks, and the same refusals, naming the same row.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { GgmlType } from '../../src/formats/gguf/ggml-types.js';
import { quantizeRows } from '../../src/formats/gguf/quants/index.js';
import { quantizeRowsParallel } from '../../src/formats/gguf/quants/parallel.js';
import { seededRandom } from '../../src/runtime/sampling.js';
import { normal } from '../passes/correlated-layer.js';

// 601 x 512: above the 256K values below which the calling thread encodes, and rows that no thread count divides.
const ROWS = 601;
const COLS = 512;

function matrix(seed: number): Float32Array {
  const g = normal(seededRandom(seed));
  const m = new Float32Array(ROWS * COLS);
  for (let i = 0; i < m.length; i++) m[i] = g() * (i % 97 === 0 ? 8 : 0.05);
  return m;
}

test('quantizeRowsParallel: the bytes of quantizeRows, on 2 and 3 threads, with and without importance', async () => {
  const w = matrix(7);
  const rand = seededRandom(8);
  const importance = Float32Array.from({ length: COLS }, () => rand() * 2);
  const cases: Array<[GgmlType, { importance?: Float32Array; searchQ8?: boolean }]> = [
    ['Q4_K', {}],
    ['Q4_K', { importance }],
    ['Q6_K', {}],
    ['Q5_K', { importance }],
    ['Q4_0', {}],
    ['Q8_0', { importance, searchQ8: true }],
    ['F16', {}],
  ];
  for (const [type, options] of cases) {
    const one = quantizeRows(type, w, ROWS, COLS, options);
    for (const threads of [2, 3]) {
      const many = await quantizeRowsParallel(type, w, ROWS, COLS, options, threads);
      assert.equal(many.length, one.length, `${type} on ${threads} threads`);
      assert.ok(Buffer.from(many).equals(Buffer.from(one)), `${type} on ${threads} threads: bytes differ`);
    }
  }
  // The caller's matrix is not moved to the threads (they are sent copies).
  assert.equal(w.length, ROWS * COLS);
});

test('quantizeRowsParallel: refuses what quantizeRows refuses, naming the row in the whole matrix', async () => {
  const w = matrix(9);
  w[500 * COLS + 3] = Number.NaN;
  await assert.rejects(quantizeRowsParallel('Q4_K', w, ROWS, COLS, {}, 2), /Q4_K: value NaN at row 500, column 3/);
  await assert.rejects(
    quantizeRowsParallel('Q4_K', matrix(1).subarray(0, 600 * 500), 600, 500, {}, 2),
    /Q4_K: a row of 500 columns is not a multiple of its 256-element block/,
  );
});
