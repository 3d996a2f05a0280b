// Dense float64 linear algebra shared by the OBS-style passes (GPTQ, SparseGPT): Cholesky, SPD inverse
// and the upper Cholesky factor of H^-1, plus the dead-input and dampening rules of the reference GPTQ.
// Matrices are row-major n x n Float64Arrays; loops run along rows so the inner loops are contiguous.
import { InputError, LlmoptError } from '../core/errors.js';

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
  // once per block, and two rows j against four block rows make 8 products per 6 loads.
  for (let i0 = 0; i0 < n; i0 += ROW_BLOCK) {
    const i1 = Math.min(n, i0 + ROW_BLOCK);
    let j = 0;
    for (; j + 1 < i0; j += 2) {
      // Columns j and j+1 together: 4 rows x 2 columns of sums per pass over k (6 loads, 8 products).
      const rj = j * n;
      const rj1 = rj + n;
      const inv0 = 1 / a[rj + j]!;
      const inv1 = 1 / a[rj1 + j + 1]!;
      const link = a[rj1 + j]!; // L[j+1][j]: the k = j term of column j+1
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
        let t0 = a[r0 + j + 1]!;
        let t1 = a[r1 + j + 1]!;
        let t2 = a[r2 + j + 1]!;
        let t3 = a[r3 + j + 1]!;
        for (let k = 0; k < j; k++) {
          const p = a[rj + k]!;
          const q = a[rj1 + k]!;
          const x0 = a[r0 + k]!;
          const x1 = a[r1 + k]!;
          const x2 = a[r2 + k]!;
          const x3 = a[r3 + k]!;
          s0 -= x0 * p;
          s1 -= x1 * p;
          s2 -= x2 * p;
          s3 -= x3 * p;
          t0 -= x0 * q;
          t1 -= x1 * q;
          t2 -= x2 * q;
          t3 -= x3 * q;
        }
        s0 *= inv0;
        s1 *= inv0;
        s2 *= inv0;
        s3 *= inv0;
        a[r0 + j] = s0;
        a[r1 + j] = s1;
        a[r2 + j] = s2;
        a[r3 + j] = s3;
        a[r0 + j + 1] = (t0 - s0 * link) * inv1;
        a[r1 + j + 1] = (t1 - s1 * link) * inv1;
        a[r2 + j + 1] = (t2 - s2 * link) * inv1;
        a[r3 + j + 1] = (t3 - s3 * link) * inv1;
      }
      for (; i < i1; i++) {
        const ri = i * n;
        let s = a[ri + j]!;
        let t = a[ri + j + 1]!;
        for (let k = 0; k < j; k++) {
          s -= a[ri + k]! * a[rj + k]!;
          t -= a[ri + k]! * a[rj1 + k]!;
        }
        s *= inv0;
        a[ri + j] = s;
        a[ri + j + 1] = (t - s * link) * inv1;
      }
    }
    for (; j < i0; j++) {
      const rj = j * n;
      const inv = 1 / a[rj + j]!;
      for (let i = i0; i < i1; i++) {
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
 * Only the lower triangle is read; the strict upper triangle is zero on return.
 */
export function invertLowerTriangular(l: Float64Array, n: number): void {
  // Built transposed, as Y = X^T = L^-T (upper): Y[j][i] = -(L[i][j:i] . Y[j][j:i]) / L[i][i] for i > j,
  // a dot of two contiguous rows. Rows of Y are independent, so a block of them is built in scratch
  // rows while each row i of L is read once per block; two rows i against four scratch rows make 8
  // products per 6 loads.
  // Finished rows of Y go to the upper triangle (the diagonal is saved first), then one transposition.
  const diag = new Float64Array(n);
  for (let i = 0; i < n; i++) diag[i] = l[i * n + i]!;
  const y = new Float64Array(ROW_BLOCK * n); // [ROW_BLOCK, n] rows j0.. of Y, zero left of the diagonal
  for (let j0 = 0; j0 < n; j0 += ROW_BLOCK) {
    const nb = Math.min(n, j0 + ROW_BLOCK) - j0;
    y.fill(0);
    for (let b = 0; b < nb; b++) y[b * n + j0 + b] = 1 / diag[j0 + b]!;
    // Rows i inside the block see fewer than nb rows of Y above them: one at a time.
    const blockEnd = j0 + nb;
    for (let i = j0 + 1; i < blockEnd; i++) {
      const ri = i * n;
      const scale = -1 / diag[i]!;
      for (let b = 0; b < i - j0; b++) {
        const yb = b * n;
        let s = 0;
        for (let k = j0; k < i; k++) s += l[ri + k]! * y[yb + k]!;
        y[yb + i] = s * scale;
      }
    }
    // Below the block: rows i and i+1 of L against four rows of Y per pass (6 loads, 8 products);
    // the k = i term of row i+1 waits for Y[.][i].
    let i = blockEnd;
    for (; i + 1 < n; i += 2) {
      const ri = i * n;
      const ri1 = ri + n;
      const scale0 = -1 / diag[i]!;
      const scale1 = -1 / diag[i + 1]!;
      const link = l[ri1 + i]!;
      let b = 0;
      for (; b + 3 < nb; b += 4) {
        const y0 = b * n;
        const y1 = y0 + n;
        const y2 = y1 + n;
        const y3 = y2 + n;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        let t0 = 0;
        let t1 = 0;
        let t2 = 0;
        let t3 = 0;
        for (let k = j0; k < i; k++) {
          const p = l[ri + k]!;
          const q = l[ri1 + k]!;
          const v0 = y[y0 + k]!;
          const v1 = y[y1 + k]!;
          const v2 = y[y2 + k]!;
          const v3 = y[y3 + k]!;
          s0 += p * v0;
          s1 += p * v1;
          s2 += p * v2;
          s3 += p * v3;
          t0 += q * v0;
          t1 += q * v1;
          t2 += q * v2;
          t3 += q * v3;
        }
        s0 *= scale0;
        s1 *= scale0;
        s2 *= scale0;
        s3 *= scale0;
        y[y0 + i] = s0;
        y[y1 + i] = s1;
        y[y2 + i] = s2;
        y[y3 + i] = s3;
        y[y0 + i + 1] = (t0 + link * s0) * scale1;
        y[y1 + i + 1] = (t1 + link * s1) * scale1;
        y[y2 + i + 1] = (t2 + link * s2) * scale1;
        y[y3 + i + 1] = (t3 + link * s3) * scale1;
      }
      for (; b < nb; b++) {
        const yb = b * n;
        let s = 0;
        let t = 0;
        for (let k = j0; k < i; k++) {
          s += l[ri + k]! * y[yb + k]!;
          t += l[ri1 + k]! * y[yb + k]!;
        }
        s *= scale0;
        y[yb + i] = s;
        y[yb + i + 1] = (t + link * s) * scale1;
      }
    }
    if (i < n) {
      const ri = i * n;
      const scale = -1 / diag[i]!;
      for (let b = 0; b < nb; b++) {
        const yb = b * n;
        let s = 0;
        for (let k = j0; k < i; k++) s += l[ri + k]! * y[yb + k]!;
        y[yb + i] = s * scale;
      }
    }
    for (let b = 0; b < nb; b++) {
      const j = j0 + b;
      l.set(y.subarray(b * n + j, (b + 1) * n), j * n + j);
    }
  }
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) {
      l[i * n + j] = l[j * n + i]!;
      l[j * n + i] = 0;
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

/** Columns of the trailing matrix updated together by {@link lazyBatchUpdate}: a [block, TILE] tile of U stays in L2. */
const UPDATE_TILE = 256;

/**
 * The lazy-batch update of GPTQ and SparseGPT after a block of columns [i1, i2) is done:
 * W[:, i2:] -= Err @ U[i1:i2, i2:], applied to `work` [nRows, n] with `err` [nRows, i2 - i1] and U [n, n].
 */
export function lazyBatchUpdate(
  work: Float64Array,
  nRows: number,
  err: Float64Array,
  u: Float64Array,
  n: number,
  i1: number,
  i2: number,
): void {
  const width = i2 - i1;
  for (let c0 = i2; c0 < n; c0 += UPDATE_TILE) {
    const c1 = Math.min(n, c0 + UPDATE_TILE);
    let r = 0;
    // Two rows of W by four rows of U per pass: 4 loads of U and 2 loads and stores of W for 8 products.
    for (; r + 1 < nRows; r += 2) {
      const base0 = r * n;
      const base1 = base0 + n;
      const eb0 = r * width;
      const eb1 = eb0 + width;
      let k = 0;
      for (; k + 3 < width; k += 4) {
        const a0 = err[eb0 + k]!;
        const a1 = err[eb0 + k + 1]!;
        const a2 = err[eb0 + k + 2]!;
        const a3 = err[eb0 + k + 3]!;
        const b0 = err[eb1 + k]!;
        const b1 = err[eb1 + k + 1]!;
        const b2 = err[eb1 + k + 2]!;
        const b3 = err[eb1 + k + 3]!;
        const h0 = (i1 + k) * n;
        const h1 = h0 + n;
        const h2 = h1 + n;
        const h3 = h2 + n;
        for (let c = c0; c < c1; c++) {
          const u0 = u[h0 + c]!;
          const u1 = u[h1 + c]!;
          const u2 = u[h2 + c]!;
          const u3 = u[h3 + c]!;
          work[base0 + c] -= a0 * u0 + a1 * u1 + a2 * u2 + a3 * u3;
          work[base1 + c] -= b0 * u0 + b1 * u1 + b2 * u2 + b3 * u3;
        }
      }
      for (; k < width; k++) {
        const a = err[eb0 + k]!;
        const b = err[eb1 + k]!;
        const h = (i1 + k) * n;
        for (let c = c0; c < c1; c++) {
          const v = u[h + c]!;
          work[base0 + c] -= a * v;
          work[base1 + c] -= b * v;
        }
      }
    }
    for (; r < nRows; r++) {
      const base = r * n;
      const eb = r * width;
      for (let k = 0; k < width; k++) {
        const e = err[eb + k]!;
        if (e === 0) continue;
        const h = (i1 + k) * n;
        for (let c = c0; c < c1; c++) work[base + c] -= e * u[h + c]!;
      }
    }
  }
}
