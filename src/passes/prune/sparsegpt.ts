// SparseGPT (Frantar & Alistarh, 2023): prunes a linear layer column by column and, as in OBS, moves
// each pruned weight's loss onto the not-yet-visited columns through the Cholesky factor of H^-1,
// so the layer's output on the calibration inputs changes as little as possible.
import { InputError } from '../../core/errors.js';
import { dampedInverseFactor, fixDeadInputs, lazyBatchUpdate } from '../linalg.js';
import { orderByScore, pruneLowest, validateNm, validateSparsity } from './masks.js';

/** N:M (n kept of every m inputs) or a fraction of every row. */
export type SparseGptStructure = { kind: 'nm'; n: number; m: number } | { kind: 'unstructured'; sparsity: number };

export interface SparseGptOptions {
  structure: SparseGptStructure;
  /** Relative dampening: percdamp * mean(diag(H)) is added to the diagonal (default 0.01). */
  dampening?: number;
  /** Columns per lazy-batch update (default 128; rounded down to a multiple of M for N:M). */
  lazyBlock?: number;
}

/** What {@link sparseGptPrune} returns. */
export interface SparseGptResult {
  /** The updated weight [rows, cols], exactly 0 where pruned. */
  pruned: Float32Array;
  /** [rows, cols], 1 = kept. */
  mask: Uint8Array;
  /** The relative dampening used (larger than asked when H needed more to factor). */
  dampeningUsed: number;
}

/** Rows processed together: their working copy stays small and each tile of U is reused across them. */
const ROW_CHUNK = 32;

/**
 * SparseGPT-prunes a linear weight W [rows = out_features, cols = in_features] given the calibration
 * Gram matrix H = sum_tokens x x^T [cols, cols] over `nSamples` tokens (neither input is modified; the
 * scale of H does not change the result).
 *
 * As in the reference: inputs with H_jj = 0 get H_jj = 1 and zero weights, H is dampened, and columns
 * are visited in lazy blocks; a pruned weight w with d = U_jj contributes the error (w - 0) / d, which
 * updates the rest of its block at once and the later columns once per block. Masks rank w^2 / d^2
 * of the current (updated) weights:
 * - unstructured: chosen at each block start, per row (the reference ranks the whole block across
 *   rows); row targets are cumulative, round(sparsity * end) - round(sparsity * start), so every row
 *   loses exactly round(sparsity * cols) weights;
 * - N:M: chosen per group of m columns as the loop reaches the group, keeping n.
 */
export function sparseGptPrune(
  w: Float32Array,
  rows: number,
  cols: number,
  H: Float64Array,
  nSamples: number,
  opts: SparseGptOptions,
): SparseGptResult {
  if (w.length !== rows * cols) throw new InputError(`weight has ${w.length} values, expected ${rows}x${cols}`);
  if (H.length !== cols * cols) throw new InputError(`Hessian has ${H.length} values, expected ${cols}x${cols}`);
  if (!(nSamples > 0)) throw new InputError(`SparseGPT needs calibration tokens, got ${nSamples}`);
  const st = opts.structure;
  if (st.kind === 'nm') validateNm(cols, st.n, st.m);
  else validateSparsity(st.sparsity);
  const lazyAsked = opts.lazyBlock ?? 128;
  if (!Number.isInteger(lazyAsked) || lazyAsked < 1) throw new InputError(`SparseGPT lazy block ${lazyAsked}: must be a positive integer`);
  // N:M groups must not straddle two lazy blocks.
  const lazy = st.kind === 'nm' ? Math.max(st.m, Math.floor(lazyAsked / st.m) * st.m) : lazyAsked;

  const h = Float64Array.from(H);
  const dead = fixDeadInputs(h, cols);
  const { factor: u, dampening } = dampedInverseFactor(h, cols, opts.dampening ?? 0.01);

  const pruned = new Float32Array(rows * cols); // [rows, cols]
  const mask = new Uint8Array(rows * cols).fill(1); // [rows, cols]
  const work = new Float64Array(ROW_CHUNK * cols); // [ROW_CHUNK, cols]
  const width0 = Math.min(lazy, cols);
  const err = new Float64Array(ROW_CHUNK * width0); // [ROW_CHUNK, block width]
  const scores = new Float64Array(width0); // [block width] w^2 / d^2 of one row
  const order = new Int32Array(st.kind === 'nm' ? st.m : 0);
  for (let r0 = 0; r0 < rows; r0 += ROW_CHUNK) {
    const nr = Math.min(rows, r0 + ROW_CHUNK) - r0;
    for (let rr = 0; rr < nr; rr++) {
      for (let c = 0; c < cols; c++) work[rr * cols + c] = dead[c] ? 0 : w[(r0 + rr) * cols + c]!;
    }
    for (let i1 = 0; i1 < cols; i1 += lazy) {
      const i2 = Math.min(cols, i1 + lazy);
      const width = i2 - i1;
      for (let rr = 0; rr < nr; rr++) {
        const base = rr * cols;
        const out = (r0 + rr) * cols;
        if (st.kind === 'unstructured') {
          for (let k = 0; k < width; k++) scores[k] = obsScore(work[base + i1 + k]!, u[(i1 + k) * (cols + 1)]!);
          const count = Math.round(st.sparsity * i2) - Math.round(st.sparsity * i1);
          pruneLowest(scores.subarray(0, width), 0, width, count, mask, out + i1);
        }
        for (let j = i1; j < i2; j++) {
          if (st.kind === 'nm' && j % st.m === 0) {
            for (let k = 0; k < st.m; k++) scores[k] = obsScore(work[base + j + k]!, u[(j + k) * (cols + 1)]!);
            orderByScore(scores, 0, st.m, order);
            for (let t = st.n; t < st.m; t++) mask[out + j + order[t]!] = 0;
          }
          const x = work[base + j]!;
          if (mask[out + j]) {
            pruned[out + j] = x;
            err[rr * width + (j - i1)] = 0;
            continue;
          }
          // pruned[out + j] stays 0.
          const hj = j * cols;
          const e = x / u[hj + j]!;
          err[rr * width + (j - i1)] = e;
          if (e === 0) continue;
          for (let k = j + 1; k < i2; k++) work[base + k] -= e * u[hj + k]!;
        }
      }
      lazyBatchUpdate(work, nr, err, u, cols, i1, i2);
    }
  }
  return { pruned, mask, dampeningUsed: dampening };
}

/** The OBS saliency w^2 / d^2 of removing a weight, d = U_jj. */
function obsScore(x: number, d: number): number {
  return (x * x) / (d * d);
}
