// Searched clipping (--clip search): each block's range is shrunk over a grid of factors and the one with the
// smallest reconstruction error kept, the error weighted by each input column's activation energy when calibration
// is given. Factor 1 (min/max) is on the grid, so a block's error never exceeds min/max rounding's.
import type { BlockQuantConfig } from '../../core/block-quant.js';
import { blockParams, dequantizeValue, quantizeValue, type BlockChooser, type BlockParams, type QuantGrid } from './blockwise.js';

export const CLIP_MODES = ['minmax', 'search'] as const;
export type ClipMode = (typeof CLIP_MODES)[number];

/** Shrink factors tried, 1.00 down to 0.70 in steps of 0.02 (AutoAWQ's clip search goes to 0.5 in 20 steps; 4-bit blocks
 * of 32 rarely gain below 0.7, and each factor costs one pass over the weights). */
export const SHRINK_FACTORS: readonly number[] = Array.from({ length: 16 }, (_, i) => 1 - 0.02 * i);

/**
 * The error of a block under `p`: sum over its values of importance[col] * (x - dequantized(x))^2, with the
 * scale rounded to float32 as it is stored; importance null weighs every column 1.
 */
export function blockError(
  values: ArrayLike<number>,
  start: number,
  end: number,
  col: number,
  p: BlockParams,
  cfg: BlockQuantConfig & QuantGrid,
  importance: ArrayLike<number> | null,
): number {
  const q = { scale: Math.fround(p.scale), zero: p.zero };
  let e = 0;
  for (let i = start; i < end; i++) {
    const x = values[i]!;
    const d = x - dequantizeValue(quantizeValue(x, q, cfg.bits, cfg.fullRange), q);
    e += (importance ? importance[col + i - start]! : 1) * d * d;
  }
  return e;
}

/**
 * The block's parameters over {@link SHRINK_FACTORS} with the least {@link blockError}; ties keep the larger range.
 * On MatMulNBits' symmetric grid each factor is tried with the extreme on either end code (-2^(bits-1) steps, the
 * default, or on the top code, 2^(bits-1) - 1 steps: absmax / (2^(bits-1) - 1)); the Hugging Face grids keep their own.
 */
export function searchBlockParams(
  values: ArrayLike<number>,
  start: number,
  end: number,
  col: number,
  cfg: BlockQuantConfig & QuantGrid,
  importance: ArrayLike<number> | null,
): BlockParams {
  let best = blockParams(values, start, end, cfg);
  let bestError = blockError(values, start, end, col, best, cfg, importance);
  const consider = (p: BlockParams) => {
    const e = blockError(values, start, end, col, p, cfg, importance);
    if (e < bestError) {
      best = p;
      bestError = e;
    }
  };
  const ownGrid = cfg.symmetric && !cfg.fullRange && !cfg.float16Scales;
  const half = 1 << (cfg.bits - 1);
  for (let k = 0; k < SHRINK_FACTORS.length && bestError > 0; k++) {
    const p = blockParams(values, start, end, cfg, SHRINK_FACTORS[k]!);
    if (k > 0) consider(p);
    if (!ownGrid) continue;
    const other = { scale: (-p.scale * half) / (half - 1), zero: p.zero };
    consider(other);
  }
  return best;
}

/**
 * The block chooser of a clip mode: undefined for min/max (the callers' default), else the search weighted by
 * `importance` per input column (the Hessian's diagonal, sum of x_j^2 over calibration tokens), or unweighted.
 */
export function clipChooser(
  mode: ClipMode,
  cfg: BlockQuantConfig & QuantGrid,
  importance: ArrayLike<number> | null,
): BlockChooser | undefined {
  if (mode === 'minmax') return undefined;
  return (values, start, end, col) => searchBlockParams(values, start, end, col, cfg, importance);
}

/** Column j's activation energy, the diagonal of the Gram matrix H [cols, cols]. */
export function hessianDiagonal(H: Float64Array, cols: number): Float64Array {
  const d = new Float64Array(cols);
  for (let j = 0; j < cols; j++) d[j] = H[j * cols + j]!;
  return d;
}
