// Pruning: N:M and unstructured masks (exact counts, lowest scores go, ties), their checks, argument
// errors naming the option, the scores, and SparseGPT against magnitude and Wanda on a small layer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkNm, nmMask, unstructuredMask } from '../../src/passes/prune/masks.js';
import { sparsityOf } from '../../src/model/sparsity.js';
import { magnitudeScores, wandaScores } from '../../src/passes/prune/scores.js';
import { sparseGptPrune } from '../../src/passes/prune/sparsegpt.js';
import { InputError } from '../../src/core/errors.js';
import { seededRandom } from '../../src/runtime/sampling.js';
import { correlatedLayer, outputError as layerError } from './correlated-layer.js';

const randomScores = (count: number, seed: number) => {
  const rand = seededRandom(seed);
  return Float32Array.from({ length: count }, rand);
};

function zerosIn(mask: Uint8Array, start: number, len: number): number {
  let z = 0;
  for (let i = start; i < start + len; i++) if (!mask[i]) z++;
  return z;
}

for (const [n, m] of [
  [2, 4],
  [1, 4],
  [4, 8],
] as const) {
  test(`nmMask ${n}:${m} keeps the ${n} highest of every ${m}: exactly ${m - n} zeros per group`, () => {
    const [rows, cols] = [8, 32];
    const s = randomScores(rows * cols, n * 10 + m);
    const mask = nmMask(s, rows, cols, n, m);
    for (let g = 0; g < rows * cols; g += m) {
      assert.equal(zerosIn(mask, g, m), m - n);
      let minKept = Infinity;
      let maxPruned = -Infinity;
      for (let i = g; i < g + m; i++) mask[i] ? (minKept = Math.min(minKept, s[i]!)) : (maxPruned = Math.max(maxPruned, s[i]!));
      assert.ok(maxPruned <= minKept);
    }
    const w = s.map((v, i) => (mask[i] ? v + 1 : 0));
    assert.equal(checkNm(w, rows, cols, n, m), 0);
    assert.equal(checkNm(s, rows, cols, n, m), (rows * cols) / m, 'dense: every group violates');
  });
}

test('nmMask on tied scores still prunes exactly m - n, earlier inputs kept', () => {
  const mask = nmMask(new Float32Array(8).fill(1), 1, 8, 2, 4);
  assert.deepEqual(Array.from(mask), [1, 1, 0, 0, 1, 1, 0, 0]);
});

test('unstructured per row: exactly round(sparsity * cols) lowest pruned in every row, ties included', () => {
  const [rows, cols] = [10, 37];
  const s = randomScores(rows * cols, 5);
  const tied = s.map((v) => Math.floor(v * 4)); // many equal scores
  for (const scores of [s, tied]) {
    const mask = unstructuredMask(scores, rows, cols, 0.3, 'row');
    for (let r = 0; r < rows; r++) {
      assert.equal(zerosIn(mask, r * cols, cols), Math.round(0.3 * cols));
      let minKept = Infinity;
      let maxPruned = -Infinity;
      for (let i = r * cols; i < (r + 1) * cols; i++)
        mask[i] ? (minKept = Math.min(minKept, scores[i]!)) : (maxPruned = Math.max(maxPruned, scores[i]!));
      assert.ok(maxPruned <= minKept);
    }
  }
});

test('unstructured per layer: one global ranking, exact count', () => {
  const [rows, cols] = [6, 20];
  const s = randomScores(rows * cols, 6);
  for (let c = 0; c < cols; c++) s[c] = 10; // row 0 all high: nothing of it goes
  const mask = unstructuredMask(s, rows, cols, 0.5, 'layer');
  assert.equal(zerosIn(mask, 0, rows * cols), 60);
  assert.equal(zerosIn(mask, 0, cols), 0);
  let minKept = Infinity;
  let maxPruned = -Infinity;
  s.forEach((v, i) => (mask[i] ? (minKept = Math.min(minKept, v)) : (maxPruned = Math.max(maxPruned, v))));
  assert.ok(maxPruned <= minKept);
  assert.equal(sparsityOf(s.map((v, i) => (mask[i] ? v : 0))), 0.5);
});

test('invalid patterns and fractions throw InputError naming the option', () => {
  const s = new Float32Array(16);
  const expectInput = (f: () => unknown, text: string) =>
    assert.throws(f, (e: unknown) => e instanceof InputError && e.message.includes(text), text);
  expectInput(() => nmMask(s, 2, 8, 4, 4), '--sparsity 4:4: N must be smaller than M');
  expectInput(() => nmMask(s, 2, 8, 0, 4), '--sparsity 0:4');
  expectInput(() => checkNm(s, 1, 16, 5, 4), '--sparsity 5:4');
  expectInput(() => nmMask(s, 2, 8, 2, 3), '--sparsity 2:3: in_features 8 is not a multiple of M');
  for (const f of [0, 1, 1.5, -0.1, NaN]) expectInput(() => unstructuredMask(s, 2, 8, f, 'row'), `--sparsity ${f}`);
  const h = new Float64Array(64).fill(0);
  expectInput(() => sparseGptPrune(s, 2, 8, h, 10, { structure: { kind: 'nm', n: 4, m: 4 } }), '--sparsity 4:4');
  expectInput(() => sparseGptPrune(s, 2, 8, h, 10, { structure: { kind: 'unstructured', sparsity: 1 } }), '--sparsity 1');
});

test('magnitude and Wanda scores', () => {
  const w = Float32Array.from([-2, 1, 0.5, -0.25]);
  assert.deepEqual(Array.from(magnitudeScores(w)), [2, 1, 0.5, 0.25]);
  assert.deepEqual(Array.from(wandaScores(w, 2, 2, Float64Array.from([4, 9]))), [4, 3, 1, 0.75]);
  assert.throws(() => wandaScores(w, 2, 2, Float64Array.from([4])), InputError);
});

// --- SparseGPT on a small layer with correlated inputs --------------------------------------------

const ROWS = 64;
const COLS = 200; // two lazy blocks of 128 and 72
const TOKENS = 600;

const masked = (w: Float32Array, mask: Uint8Array) => w.map((v, i) => (mask[i] ? v : 0));

const { w, h } = correlatedLayer(2, ROWS, COLS, TOKENS, 16);
const outputError = (a: Float32Array, b: Float32Array, hh: Float64Array) => layerError(a, b, hh, ROWS, COLS);
const norms = Float64Array.from({ length: COLS }, (_, j) => h[j * COLS + j]!);

test('SparseGPT 2:4: output error below magnitude and Wanda, exact zeros, pattern holds', () => {
  const res = sparseGptPrune(w, ROWS, COLS, h, TOKENS, { structure: { kind: 'nm', n: 2, m: 4 } });
  const errSparse = outputError(w, res.pruned, h);
  const errMag = outputError(w, masked(w, nmMask(magnitudeScores(w), ROWS, COLS, 2, 4)), h);
  const errWanda = outputError(w, masked(w, nmMask(wandaScores(w, ROWS, COLS, norms), ROWS, COLS, 2, 4)), h);
  console.log(
    `# 2:4 ||W X^T - W' X^T||^2: SparseGPT ${errSparse.toFixed(1)}, Wanda ${errWanda.toFixed(1)}, magnitude ${errMag.toFixed(1)}`,
  );
  assert.ok(errSparse < errWanda && errSparse < errMag);
  assert.equal(res.dampeningUsed, 0.01);
  for (let i = 0; i < w.length; i++) if (!res.mask[i]) assert.ok(Object.is(res.pruned[i], 0), `position ${i} is ${res.pruned[i]}`);
  for (let g = 0; g < w.length; g += 4) assert.equal(zerosIn(res.mask, g, 4), 2);
  assert.equal(checkNm(res.pruned, ROWS, COLS, 2, 4), 0);
  assert.equal(sparsityOf(res.pruned), 0.5);
});

test('SparseGPT 50% unstructured: output error below magnitude and Wanda, exact per-row counts', () => {
  const res = sparseGptPrune(w, ROWS, COLS, h, TOKENS, { structure: { kind: 'unstructured', sparsity: 0.5 } });
  const errSparse = outputError(w, res.pruned, h);
  const errMag = outputError(w, masked(w, unstructuredMask(magnitudeScores(w), ROWS, COLS, 0.5, 'row')), h);
  const errWanda = outputError(w, masked(w, unstructuredMask(wandaScores(w, ROWS, COLS, norms), ROWS, COLS, 0.5, 'row')), h);
  console.log(
    `# 50% ||W X^T - W' X^T||^2: SparseGPT ${errSparse.toFixed(1)}, Wanda ${errWanda.toFixed(1)}, magnitude ${errMag.toFixed(1)}`,
  );
  assert.ok(errSparse < errWanda && errSparse < errMag);
  for (let r = 0; r < ROWS; r++) assert.equal(zerosIn(res.mask, r * COLS, COLS), 100);
  for (let i = 0; i < w.length; i++) if (!res.mask[i]) assert.ok(Object.is(res.pruned[i], 0));
});

test('SparseGPT: odd fractions still prune exactly round(sparsity * cols) per row across blocks', () => {
  const res = sparseGptPrune(w, ROWS, COLS, h, TOKENS, { structure: { kind: 'unstructured', sparsity: 0.37 }, lazyBlock: 48 });
  for (let r = 0; r < ROWS; r++) assert.equal(zerosIn(res.mask, r * COLS, COLS), 74);
});

test('SparseGPT: an input that never fired is pruned or zero', () => {
  const hd = Float64Array.from(h);
  for (let j = 0; j < COLS; j++) hd[3 * COLS + j] = hd[j * COLS + 3] = 0;
  const res = sparseGptPrune(w, ROWS, COLS, hd, TOKENS, { structure: { kind: 'nm', n: 2, m: 4 }, lazyBlock: 30 });
  for (let r = 0; r < ROWS; r++) assert.equal(res.pruned[r * COLS + 3], 0);
  assert.equal(checkNm(res.pruned, ROWS, COLS, 2, 4), 0);
});
