// Dense float64 linear algebra shared by the OBS-style passes (GPTQ, SparseGPT): Cholesky, SPD inverse
// and the upper Cholesky factor of H^-1, plus the dead-input and dampening rules of the reference GPTQ.
// Matrices are row-major n x n Float64Arrays; loops run along rows so the inner loops are contiguous.
import { InputError, LlmoptError } from '../errors.js';

/** Rows handled together in the blocked loops: a block of row prefixes stays in L2 while a shared row streams. */
const ROW_BLOCK = 32;

/**
 * In-place lower Cholesky factorization A = L L^T of a symmetric positive-definite matrix.
 * Only the lower triangle of `a` is read; on success it holds L and the strict upper triangle is zeroed.
 * Returns false when a pivot is not positive (A not numerically PD); `a` is then partly overwritten.
 */
export function choleskyLower(a: Float64Array, n: number): boolean {
  // Left-looking "dot" form, rows in blocks: L[i][j] = (A[i][j] - L[i][:j] . L[j][:j]) / L[j][j].
  // For j before the block, the rows of the block are independent, so each finished row j is read
  // once per block and dotted against four block rows at a time (one load of L[j][k] feeds 4 products).
  for (let i0 = 0; i0 < n; i0 += ROW_BLOCK) {
    const i1 = Math.min(n, i0 + ROW_BLOCK);
    for (let j = 0; j < i0; j++) {
      const rj = j * n;
      const inv = 1 / a[rj + j]!;
      let i = i0;
      for (; i + 3 < i1; i += 4) {
        const r0 = i * n;
        const r1 = r0 + n;
        const r2 = r1 + n;
        const r3 = r2 + n;
        let s0 = a[r0 + j]!;
        let s1 = a[r1 + j]!;
        let s2 = a[r2 + j]!;
        let s3 = a[r3 + j]!;
        for (let k = 0; k < j; k++) {
          const l = a[rj + k]!;
          s0 -= a[r0 + k]! * l;
          s1 -= a[r1 + k]! * l;
          s2 -= a[r2 + k]! * l;
          s3 -= a[r3 + k]! * l;
        }
        a[r0 + j] = s0 * inv;
        a[r1 + j] = s1 * inv;
        a[r2 + j] = s2 * inv;
        a[r3 + j] = s3 * inv;
      }
      for (; i < i1; i++) {
        const ri = i * n;
        let s = a[ri + j]!;
        for (let k = 0; k < j; k++) s -= a[ri + k]! * a[rj + k]!;
        a[ri + j] = s * inv;
      }
    }
    // The diagonal block: sequential, each row needs the block rows above it.
    for (let i = i0; i < i1; i++) {
      const ri = i * n;
      for (let j = i0; j <= i; j++) {
        const rj = j * n;
        let s = a[ri + j]!;
        for (let k = 0; k < j; k++) s -= a[ri + k]! * a[rj + k]!;
        if (j < i) {
          a[ri + j] = s / a[rj + j]!;
        } else {
          // `!(s > 0)` also rejects NaN.
          if (!(s > 0)) return false;
          a[ri + i] = Math.sqrt(s);
        }
      }
    }
  }
  for (let i = 0; i < n; i++) a.fill(0, i * n + i + 1, (i + 1) * n);
  return true;
}

/**
 * In-place inverse of a lower-triangular matrix with a nonzero diagonal (the result is lower triangular).
 * The strict upper triangle is assumed zero and left so.
 */
export function invertLowerTriangular(l: Float64Array, n: number): void {
  // Row i of X = L^-1: X[i][:i] = -(sum_{k<i} L[i][k] X[k][:i]) / L[i][i], X[i][i] = 1 / L[i][i].
  // Row i of L is still needed while row i of X accumulates, so sums go to a block of scratch rows;
  // rows k before the block are shared by the whole block (each read once per block).
  const acc = new Float64Array(ROW_BLOCK * n); // [ROW_BLOCK, n]
  for (let i0 = 0; i0 < n; i0 += ROW_BLOCK) {
    const i1 = Math.min(n, i0 + ROW_BLOCK);
    acc.fill(0);
    for (let k = 0; k < i0; k++) {
      const rk = k * n;
      for (let i = i0; i < i1; i++) {
        const c = l[i * n + k]!;
        if (c === 0) continue;
        const ra = (i - i0) * n;
        for (let j = 0; j <= k; j++) acc[ra + j] -= c * l[rk + j]!;
      }
    }
    for (let i = i0; i < i1; i++) {
      const ri = i * n;
      const ra = (i - i0) * n;
      // The rows k of this block above i are already inverted.
      for (let k = i0; k < i; k++) {
        const c = l[ri + k]!;
        if (c === 0) continue;
        const rk = k * n;
        for (let j = 0; j <= k; j++) acc[ra + j] -= c * l[rk + j]!;
      }
      const inv = 1 / l[ri + i]!;
      for (let j = 0; j < i; j++) l[ri + j] = acc[ra + j]! * inv;
      l[ri + i] = inv;
    }
  }
}

/** The inverse of a symmetric positive-definite matrix, through its Cholesky factor; throws when not PD. */
export function spdInverse(a: Float64Array, n: number): Float64Array {
  const x = Float64Array.from(a);
  if (!choleskyLower(x, n)) throw new LlmoptError(`matrix ${n}x${n} is not positive definite`);
  invertLowerTriangular(x, n); // x = L^-1
  // A^-1 = L^-T L^-1 = sum_k X[k]^T X[k] (rank-one updates by the rows of X), lower triangle first.
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const rk = k * n;
    for (let i = 0; i <= k; i++) {
      const c = x[rk + i]!;
      if (c === 0) continue;
      const ri = i * n;
      for (let j = 0; j <= i; j++) out[ri + j] += c * x[rk + j]!;
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) out[j * n + i] = out[i * n + j]!;
  return out;
}

/**
 * In place: replaces SPD `a` by the upper-triangular U with A^-1 = U^T U, the factor GPTQ and SparseGPT
 * read (torch: cholesky -> cholesky_inverse -> cholesky(upper=True)). Returns false when A is not PD.
 */
export function upperCholeskyOfInverse(a: Float64Array, n: number): boolean {
  // With J the order-reversing permutation, J A J = M M^T (M lower) gives A = V V^T with V = J M J upper,
  // so A^-1 = V^-T V^-1 and U = V^-1 = J M^-1 J. One Cholesky and one triangular inverse, no full
  // inverse. J X J of a row-major square matrix is the flat array reversed.
  a.reverse();
  if (!choleskyLower(a, n)) return false;
  invertLowerTriangular(a, n);
  a.reverse();
  return true;
}

/**
 * Marks inputs that never fired (H_jj = 0) and sets their H_jj to 1, in place, as the reference GPTQ
 * does so that H stays invertible; the caller zeroes the matching weight columns. Returns [n], 1 = dead.
 */
export function fixDeadInputs(h: Float64Array, n: number): Uint8Array {
  const dead = new Uint8Array(n);
  for (let j = 0; j < n; j++) {
    if (h[j * n + j] === 0) {
      dead[j] = 1;
      h[j * n + j] = 1;
    }
  }
  return dead;
}

/** The mean of the diagonal, the unit of the relative dampening. */
export function meanDiagonal(h: Float64Array, n: number): number {
  let s = 0;
  for (let j = 0; j < n; j++) s += h[j * n + j]!;
  return s / n;
}

/** What {@link dampedInverseFactor} returns. */
export interface InverseFactor {
  /** Upper-triangular U [n, n] with (H + damp I)^-1 = U^T U. */
  factor: Float64Array;
  /** The relative dampening that succeeded: damp = dampening * mean(diag(H)). */
  dampening: number;
}

/** Attempts of {@link dampedInverseFactor}: the dampening doubles each time (0.01 -> 5.12 at most). */
const DAMPENING_TRIES = 10;

/**
 * The upper Cholesky factor of (H + percdamp * mean(diag(H)) I)^-1 for a calibration Hessian H [n, n]
 * (not modified; dead inputs should already be fixed, see {@link fixDeadInputs}). When H is not
 * numerically positive definite the dampening is doubled and the factorization retried; the dampening
 * that worked is returned. Throws InputError on non-finite H and LlmoptError when every try fails.
 */
export function dampedInverseFactor(h: Float64Array, n: number, percdamp: number): InverseFactor {
  if (h.length !== n * n) throw new InputError(`Hessian has ${h.length} values, expected ${n}x${n}`);
  for (let i = 0; i < h.length; i++) {
    if (!Number.isFinite(h[i]!)) throw new InputError('calibration statistics (Hessian) contain non-finite values');
  }
  if (!(percdamp >= 0)) throw new InputError(`--dampening ${percdamp}: must be a non-negative fraction`);
  const mean = meanDiagonal(h, n);
  const factor = new Float64Array(n * n);
  let pd = percdamp;
  for (let attempt = 0; attempt < DAMPENING_TRIES; attempt++) {
    factor.set(h);
    const damp = pd * mean;
    for (let j = 0; j < n; j++) factor[j * n + j] += damp;
    if (upperCholeskyOfInverse(factor, n)) return { factor, dampening: pd };
    pd = pd > 0 ? pd * 2 : 0.01;
  }
  throw new LlmoptError(`Hessian ${n}x${n} is not positive definite even with dampening ${pd / 2}`);
}
