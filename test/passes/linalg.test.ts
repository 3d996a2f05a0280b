// The dense routines of the OBS passes: Cholesky and inverses on known matrices, A A^-1 = I on random
// SPD matrices (sizes that cut the row blocks raggedly), the upper factor of H^-1, dampening retries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  choleskyLower,
  dampedInverseFactor,
  fixDeadInputs,
  invertLowerTriangular,
  lazyBatchUpdate,
  spdInverse,
  upperCholeskyOfInverse,
} from '../../src/passes/linalg.js';
import { InputError, LlmoptError } from '../../src/core/errors.js';
import { seededRandom } from '../../src/runtime/sampling.js';

/** A random SPD matrix [n, n]: the Gram matrix of n + 8 random vectors plus a small ridge. */
function randomSpd(n: number, seed: number): Float64Array {
  const rand = seededRandom(seed);
  const k = n + 8;
  const x = Float64Array.from({ length: k * n }, () => rand() - 0.5); // [k, n]
  const a = new Float64Array(n * n);
  for (let t = 0; t < k; t++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] += x[t * n + i]! * x[t * n + j]!;
  for (let i = 0; i < n; i++) a[i * n + i] += 0.01;
  return a;
}

/** C = A B for square [n, n] matrices; `ta` reads A transposed. */
function matmul(a: Float64Array, b: Float64Array, n: number, ta = false): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < n; k++) {
      const aik = ta ? a[k * n + i]! : a[i * n + k]!;
      for (let j = 0; j < n; j++) c[i * n + j] += aik * b[k * n + j]!;
    }
  return c;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const identity = (n: number) => Float64Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0));

test('choleskyLower factors the textbook 3x3 and rejects an indefinite matrix', () => {
  const a = Float64Array.from([4, 12, -16, 12, 37, -43, -16, -43, 98]);
  assert.equal(choleskyLower(a, 3), true);
  assert.deepEqual(Array.from(a), [2, 0, 0, 6, 1, 0, -8, 5, 3]);
  assert.equal(choleskyLower(Float64Array.from([1, 2, 2, 1]), 2), false);
  assert.equal(choleskyLower(Float64Array.from([1, 0, 0, NaN]), 2), false);
});

test('invertLowerTriangular and spdInverse on known small matrices', () => {
  const l = Float64Array.from([2, 0, 6, 1]);
  invertLowerTriangular(l, 2);
  assert.deepEqual(Array.from(l), [0.5, 0, -3, 1]);
  const inv = spdInverse(Float64Array.from([2, 1, 1, 2]), 2);
  assert.ok(maxAbsDiff(inv, [2 / 3, -1 / 3, -1 / 3, 2 / 3]) < 1e-15);
  assert.throws(() => spdInverse(Float64Array.from([1, 2, 2, 1]), 2), LlmoptError);
});

for (const n of [64, 101]) {
  test(`random SPD ${n}x${n}: L L^T = A, A A^-1 = I, U^T U = A^-1 with U upper`, () => {
    const a = randomSpd(n, n);
    const l = Float64Array.from(a);
    assert.ok(choleskyLower(l, n));
    const llt = matmul(l, transpose(l, n), n);
    assert.ok(maxAbsDiff(llt, a) < 1e-9 * n, `L L^T - A: ${maxAbsDiff(llt, a)}`);

    const inv = spdInverse(a, n);
    const eye = matmul(a, inv, n);
    assert.ok(maxAbsDiff(eye, identity(n)) < 1e-8, `A A^-1 - I: ${maxAbsDiff(eye, identity(n))}`);

    const u = Float64Array.from(a);
    assert.ok(upperCholeskyOfInverse(u, n));
    for (let i = 0; i < n; i++) {
      assert.ok(u[i * n + i]! > 0);
      for (let j = 0; j < i; j++) assert.equal(u[i * n + j], 0);
    }
    const utu = matmul(u, u, n, true);
    const scale = Math.max(...Array.from(inv, Math.abs));
    assert.ok(maxAbsDiff(utu, inv) < 1e-9 * scale, `U^T U - A^-1: ${maxAbsDiff(utu, inv)}`);
  });
}

function transpose(a: Float64Array, n: number): Float64Array {
  const t = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) t[j * n + i] = a[i * n + j]!;
  return t;
}

test('fixDeadInputs sets H_jj = 1 where an input never fired and reports it', () => {
  const h = Float64Array.from([2, 0, 0, 0, 0, 0, 0, 0, 3]);
  assert.deepEqual(Array.from(fixDeadInputs(h, 3)), [0, 1, 0]);
  assert.deepEqual(Array.from(h), [2, 0, 0, 0, 1, 0, 0, 0, 3]);
});

test('dampedInverseFactor doubles the dampening until H factors, and reports it', () => {
  const a = randomSpd(20, 3);
  const ok = dampedInverseFactor(a, 20, 0.01);
  assert.equal(ok.dampening, 0.01);
  // Eigenvalues 2.5 and -0.5: factors once damp > 0.5 * mean(diag) = 0.5, first at 0.01 * 2^6.
  const indefinite = Float64Array.from([1, 1.5, 1.5, 1]);
  const h = Float64Array.from(indefinite);
  const r = dampedInverseFactor(h, 2, 0.01);
  assert.equal(r.dampening, 0.64);
  assert.deepEqual(h, indefinite, 'the input is left alone');
  assert.throws(() => dampedInverseFactor(Float64Array.from([1, 10, 10, 1]), 2, 0.01), LlmoptError);
  assert.throws(() => dampedInverseFactor(Float64Array.from([1, 0, 0, Infinity]), 2, 0.01), InputError);
});

test('lazyBatchUpdate equals W[:, i2:] -= Err U[i1:i2, i2:]', () => {
  const n = 300;
  const rows = 5;
  const rand = seededRandom(9);
  const u = Float64Array.from({ length: n * n }, () => rand() - 0.5);
  const work = Float64Array.from({ length: rows * n }, () => rand() - 0.5);
  const [i1, i2] = [10, 17];
  const err = Float64Array.from({ length: rows * (i2 - i1) }, () => rand() - 0.5);
  err[3] = 0;
  const expected = Float64Array.from(work);
  for (let r = 0; r < rows; r++)
    for (let k = 0; k < i2 - i1; k++) for (let c = i2; c < n; c++) expected[r * n + c] -= err[r * (i2 - i1) + k]! * u[(i1 + k) * n + c]!;
  lazyBatchUpdate(work, rows, err, u, n, i1, i2);
  assert.ok(maxAbsDiff(work, expected) < 1e-12);
});
