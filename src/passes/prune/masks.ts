// Pruning masks from importance scores: N:M semi-structured (keep the N highest of every M consecutive
// inputs) and unstructured (a fraction per output row or over the whole layer); checks of the result.
// Masks are Uint8Array [rows, cols] over a row-major weight, 1 = keep, 0 = prune.
import { InputError } from '../../core/errors.js';
import { countNmViolations } from '../../model/sparsity.js';

/** A score or weight tensor: row-major [rows, cols]. */
export type Scores = Float32Array | Float64Array;

/** Throws InputError unless n:m is a usable N:M pattern for `cols` inputs. */
export function validateNm(cols: number, n: number, m: number): void {
  const opt = `--sparsity ${n}:${m}`;
  if (!Number.isInteger(n) || !Number.isInteger(m)) throw new InputError(`${opt}: N and M must be integers`);
  if (n < 1) throw new InputError(`${opt}: N must be at least 1`);
  if (n >= m) throw new InputError(`${opt}: N must be smaller than M`);
  if (cols % m !== 0) throw new InputError(`${opt}: in_features ${cols} is not a multiple of M`);
}

/** Throws InputError unless 0 < sparsity < 1. */
export function validateSparsity(sparsity: number): void {
  if (!(sparsity > 0 && sparsity < 1)) throw new InputError(`--sparsity ${sparsity}: must be a fraction strictly between 0 and 1`);
}

/**
 * N:M mask: in each group of m consecutive inputs of a row, keep the n highest scores (2:4 keeps 2 of
 * every 4, so exactly m - n zeros per group). Ties go to the earlier input.
 */
export function nmMask(scores: Scores, rows: number, cols: number, n: number, m: number): Uint8Array {
  validateNm(cols, n, m);
  const mask = new Uint8Array(rows * cols); // [rows, cols]
  const order = new Int32Array(m);
  for (let g = 0; g < rows * cols; g += m) {
    orderByScore(scores, g, m, order);
    for (let t = 0; t < n; t++) mask[g + order[t]!] = 1;
  }
  return mask;
}

/**
 * Writes into order[0..m) the offsets of scores[start .. start+m) by decreasing score, equal scores in
 * input order (an insertion sort: m is small, 4 to 16).
 */
export function orderByScore(scores: ArrayLike<number>, start: number, m: number, order: Int32Array): void {
  for (let i = 0; i < m; i++) {
    const s = scores[start + i]!;
    let k = i;
    // Strictly greater moves ahead, so equal scores keep their input order.
    while (k > 0 && s > scores[start + order[k - 1]!]!) {
      order[k] = order[k - 1]!;
      k--;
    }
    order[k] = i;
  }
}

/**
 * Marks in `mask` (already 1 where kept) the `count` lowest of scores[start .. start+len) as pruned.
 * Exactly `count` entries go: those below the count-th smallest value, then ties in input order.
 */
export function pruneLowest(scores: Scores, start: number, len: number, count: number, mask: Uint8Array, maskStart: number): void {
  if (count <= 0) return;
  if (count >= len) {
    mask.fill(0, maskStart, maskStart + len);
    return;
  }
  // A sorted copy of the same precision gives the count-th smallest value (typed sorts are numeric).
  const sorted = scores.slice(start, start + len).sort();
  const threshold = sorted[count - 1]!;
  let left = count;
  for (let i = 0; i < len && left > 0; i++) {
    if (scores[start + i]! < threshold) {
      mask[maskStart + i] = 0;
      left--;
    }
  }
  for (let i = 0; i < len && left > 0; i++) {
    if (scores[start + i]! === threshold) {
      mask[maskStart + i] = 0;
      left--;
    }
  }
}

/**
 * Unstructured mask pruning the lowest scores: `row` scope prunes exactly round(sparsity * cols) in
 * every row (the Wanda comparison group); `layer` scope ranks the whole tensor and prunes exactly
 * round(sparsity * rows * cols).
 */
export function unstructuredMask(scores: Scores, rows: number, cols: number, sparsity: number, scope: 'row' | 'layer'): Uint8Array {
  validateSparsity(sparsity);
  const mask = new Uint8Array(rows * cols).fill(1); // [rows, cols]
  if (scope === 'layer') {
    pruneLowest(scores, 0, rows * cols, Math.round(sparsity * rows * cols), mask, 0);
  } else {
    const count = Math.round(sparsity * cols);
    for (let r = 0; r < rows; r++) pruneLowest(scores, r * cols, cols, count, mask, r * cols);
  }
  return mask;
}

/** The number of groups of m consecutive inputs with fewer than m - n zeros (0 = the N:M pattern holds). */
export function checkNm(w: Scores, rows: number, cols: number, n: number, m: number): number {
  validateNm(cols, n, m);
  return countNmViolations(w, rows, cols, n, m);
}

/** Zeroes `w` where `mask` is 0, in place (exact +0). */
export function applyMask(w: Float32Array, mask: Uint8Array): Float32Array {
  for (let i = 0; i < w.length; i++) if (!mask[i]) w[i] = 0;
  return w;
}
