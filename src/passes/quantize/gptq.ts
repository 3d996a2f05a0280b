// GPTQ (Frantar et al., 2022): block-wise int quantization of a linear layer that, column by column,
// moves each column's rounding error onto the not-yet-quantized columns through the Cholesky factor
// of H^-1, so the layer's output on the calibration inputs changes as little as possible.
import { InputError } from '../../core/errors.js';
import { dampedInverseFactor, fixDeadInputs, lazyBatchUpdate } from '../linalg.js';
import { blockParams, dequantizeValue, quantizeValue, type BlockChooser, type BlockParams, type QuantGrid } from './blockwise.js';
import { blocksPerRow, type BlockQuantConfig, type BlockQuantized } from '../../core/block-quant.js';

/** GPTQ options on top of the block layout (`blockSize` is the group size along the input dimension). */
export type GptqConfig = BlockQuantConfig & QuantGrid & GptqRun;

/** What {@link gptqQuantize} returns. */
export interface GptqResult {
  /** Codes, scales and zero points in the layout of `quantizeRtn` (so `dequantize` applies). */
  quantized: BlockQuantized;
  /** The relative dampening used (larger than asked when H needed more to factor). */
  dampeningUsed: number;
  /**
   * The reference's summed losses, sum of (w - q)^2 / d^2 / 2 with its H = 2/n X X^T, n counted in
   * tokens: the mean over calibration tokens of ||(W - Q) x||^2, measured on the dampened H.
   */
  error: number;
}

/** Rows processed together: their working copy stays small and each tile of U is reused across them. */
const ROW_CHUNK = 32;

/**
 * Lazy blocks [start, end). Without act order, every group start is made a block start, so the group's
 * parameters are taken from fully updated weights (the lazy updates of earlier blocks all applied).
 */
function lazyBlocks(cols: number, lazy: number, group: number, alignToGroups: boolean): Array<[number, number]> {
  const blocks: Array<[number, number]> = [];
  for (let i1 = 0; i1 < cols; ) {
    let i2 = Math.min(cols, i1 + lazy);
    if (alignToGroups) {
      const lastGroupStart = Math.floor(i2 / group) * group;
      if (lastGroupStart > i1 && lastGroupStart < i2) i2 = lastGroupStart;
    }
    blocks.push([i1, i2]);
    i1 = i2;
  }
  return blocks;
}

function checkInputs(w: Float32Array, rows: number, cols: number, H: Float64Array, nSamples: number): void {
  if (w.length !== rows * cols) throw new InputError(`weight has ${w.length} values, expected ${rows}x${cols}`);
  if (H.length !== cols * cols) throw new InputError(`Hessian has ${H.length} values, expected ${cols}x${cols}`);
  if (!(nSamples > 0)) throw new InputError(`GPTQ needs calibration tokens, got ${nSamples}`);
}

function positiveInteger(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1) throw new InputError(`${what} ${value}: must be a positive integer`);
  return value;
}

/**
 * The grid GPTQ rounds onto, chosen group by group: a group is `groupSize` consecutive input columns of one
 * row whose parameters (scales, zero points, mins) are chosen together; then each column's value is rounded
 * onto that group's grid. The MatMulNBits grid below is one; the GGUF block types are others.
 */
export interface GptqGrid {
  readonly groupSize: number;
  /**
   * Chooses row `r`'s parameters for group `g` from values[start..end) (the group's columns in original
   * order; the current, error-updated weights in natural order, the original weights with act order).
   */
  choose(r: number, g: number, values: ArrayLike<number>, start: number, end: number): void;
  /** Rounds `x` (row `r`, original column `c`, in group `g`) onto the grid: records its code, returns its value. */
  round(r: number, c: number, g: number, x: number): number;
}

/** GPTQ's own settings, whatever the grid. */
export interface GptqRun {
  /** Relative dampening: percdamp * mean(diag(H)) is added to the diagonal (default 0.01). */
  dampening?: number;
  /** Process columns by decreasing diag(H), with static groups (see {@link gptqQuantize}). */
  actOrder?: boolean;
  /** Columns per lazy-batch update (default 128). */
  lazyBlock?: number;
}

/**
 * GPTQ on any grid (see {@link gptqQuantize} for the algorithm): W [rows, cols] and H [cols, cols] as
 * there; the codes go to the grid. Returns the dampening used and the loss.
 */
export function gptqOnGrid(
  w: Float32Array,
  rows: number,
  cols: number,
  H: Float64Array,
  nSamples: number,
  grid: GptqGrid,
  cfg: GptqRun,
): { dampeningUsed: number; error: number } {
  checkInputs(w, rows, cols, H, nSamples);
  const group = positiveInteger(grid.groupSize, 'block size');
  const lazy = positiveInteger(cfg.lazyBlock ?? 128, 'GPTQ lazy block');
  const actOrder = cfg.actOrder ?? false;
  const nb = Math.ceil(cols / group);

  // perm[j] = the original column processed j-th; dead inputs rank with H_jj = 1, as in the reference.
  const diag = Float64Array.from({ length: cols }, (_, j) => H[j * cols + j]! || 1);
  const perm = new Int32Array(cols);
  for (let j = 0; j < cols; j++) perm[j] = j;
  if (actOrder) perm.set(Array.from(perm).sort((a, b) => diag[b]! - diag[a]! || a - b));

  // H in processing order (one copy, besides the factor), dead inputs fixed there.
  const hp = new Float64Array(cols * cols);
  if (actOrder) {
    for (let i = 0; i < cols; i++) {
      const src = perm[i]! * cols;
      for (let j = 0; j < cols; j++) hp[i * cols + j] = H[src + perm[j]!]!;
    }
  } else {
    hp.set(H);
  }
  const deadInOrder = fixDeadInputs(hp, cols);
  const dead = new Uint8Array(cols); // [cols] in the original order
  for (let j = 0; j < cols; j++) dead[perm[j]!] = deadInOrder[j]!;

  if (actOrder) {
    const row = new Float64Array(cols); // [cols] one original row, dead inputs zeroed
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) row[c] = dead[c] ? 0 : w[r * cols + c]!;
      for (let g = 0; g < nb; g++) grid.choose(r, g, row, g * group, Math.min(cols, (g + 1) * group));
    }
  }

  // U with (H + damp I)^-1 = U^T U, in processing order.
  const { factor: u, dampening } = dampedInverseFactor(hp, cols, cfg.dampening ?? 0.01);

  const blocks = lazyBlocks(cols, lazy, group, !actOrder);
  const work = new Float64Array(ROW_CHUNK * cols); // [ROW_CHUNK, cols] rows in processing order
  const err = new Float64Array(ROW_CHUNK * Math.min(lazy, cols)); // [ROW_CHUNK, block width]
  let loss = 0;
  for (let r0 = 0; r0 < rows; r0 += ROW_CHUNK) {
    const nr = Math.min(rows, r0 + ROW_CHUNK) - r0;
    for (let rr = 0; rr < nr; rr++) {
      const src = (r0 + rr) * cols;
      for (let j = 0; j < cols; j++) {
        const c = perm[j]!;
        work[rr * cols + j] = dead[c] ? 0 : w[src + c]!;
      }
    }
    for (const [i1, i2] of blocks) {
      const width = i2 - i1;
      for (let rr = 0; rr < nr; rr++) {
        const r = r0 + rr;
        const base = rr * cols;
        for (let j = i1; j < i2; j++) {
          const c = perm[j]!;
          const g = Math.floor(c / group);
          if (!actOrder && j % group === 0) grid.choose(r, g, work, base + j, base + Math.min(cols, j + group));
          const x = work[base + j]!;
          const e = (x - grid.round(r, c, g, x)) / u[j * cols + j]!;
          loss += e * e;
          err[rr * width + (j - i1)] = e;
          if (e === 0) continue;
          // The rest of the block now: W[r, j+1:i2] -= e * U[j, j+1:i2].
          const hj = j * cols;
          for (let k = j + 1; k < i2; k++) work[base + k] -= e * u[hj + k]!;
        }
      }
      lazyBatchUpdate(work, nr, err, u, cols, i1, i2);
    }
  }
  return { dampeningUsed: dampening, error: loss / nSamples };
}

/**
 * MatMulNBits' grid: `blockParams` per group, float32 scales, codes as quantizeValue rounds them; the Hugging Face
 * formats' QuantGrid settings (full signed range, float16 scales, GPTQ's smallest zero) where they are given.
 */
class NBitsGrid implements GptqGrid {
  readonly groupSize: number;
  readonly codes: Uint8Array;
  readonly scales: Float32Array;
  readonly zeroPoints: Uint8Array | null;
  private readonly nb: number;
  private readonly half: number;
  private readonly p: BlockParams = { scale: 1, zero: 0 };
  constructor(
    private readonly cfg: BlockQuantConfig & QuantGrid,
    rows: number,
    private readonly cols: number,
    private readonly chooser?: BlockChooser,
  ) {
    this.groupSize = cfg.blockSize;
    this.nb = blocksPerRow(cols, cfg.blockSize);
    this.codes = new Uint8Array(rows * cols);
    this.scales = new Float32Array(rows * this.nb); // [rows, nb]
    this.zeroPoints = cfg.symmetric ? null : new Uint8Array(rows * this.nb); // [rows, nb]
    this.half = 1 << (cfg.bits - 1);
  }
  choose(r: number, g: number, values: ArrayLike<number>, start: number, end: number): void {
    // A group's columns are in original order here, whatever the processing order: its first is g * groupSize.
    const p = this.chooser ? this.chooser(values, start, end, g * this.groupSize) : blockParams(values, start, end, this.cfg);
    this.scales[r * this.nb + g] = Math.fround(p.scale);
    if (this.zeroPoints) this.zeroPoints[r * this.nb + g] = p.zero;
  }
  round(r: number, c: number, g: number, x: number): number {
    const p = this.p;
    p.scale = this.scales[r * this.nb + g]!;
    p.zero = this.zeroPoints ? this.zeroPoints[r * this.nb + g]! : this.half;
    const code = quantizeValue(x, p, this.cfg.bits, this.cfg.fullRange);
    this.codes[r * this.cols + c] = code;
    return dequantizeValue(code, p);
  }
}

/**
 * GPTQ-quantizes a linear weight W [rows = out_features, cols = in_features] given the calibration
 * Gram matrix H = sum_tokens x x^T [cols, cols] over `nSamples` tokens (neither input is modified).
 *
 * As in the reference implementation: inputs with H_jj = 0 get H_jj = 1 and zero weights; H is
 * dampened; columns are quantized in lazy blocks, each column's scaled error propagated to the rest of
 * its block at once and to the later columns in one update per block.
 *
 * Groups (cfg.blockSize columns, the last one ragged) take their parameters from `blockParams`:
 * - in natural order, from the current, error-updated weights of the group when the loop reaches its
 *   first column (the reference reads its stale copy there when a group starts inside a lazy block;
 *   here lazy blocks are cut at group starts instead, so the weights are always current);
 * - with `actOrder`, from the original weights, all up front ("static groups"): columns go by decreasing
 *   diag(H) but each keeps the parameters of its group in the original column order, the contiguous
 *   groups that MatMulNBits stores. The codes come back in the original column order.
 * Scales are rounded to float32 before use, as the runtime stores them. `choose` replaces min/max for each group's
 * range (clip.ts's search), chosen before the group's error compensation as the parameters always are.
 */
export function gptqQuantize(
  w: Float32Array,
  rows: number,
  cols: number,
  H: Float64Array,
  nSamples: number,
  cfg: GptqConfig,
  choose?: BlockChooser,
): GptqResult {
  checkInputs(w, rows, cols, H, nSamples);
  positiveInteger(cfg.blockSize, 'block size');
  const grid = new NBitsGrid(cfg, rows, cols, choose);
  const { dampeningUsed, error } = gptqOnGrid(w, rows, cols, H, nSamples, grid, cfg);
  const quantized: BlockQuantized = {
    ...pickConfig(cfg),
    rows,
    cols,
    blocksPerRow: blocksPerRow(cols, cfg.blockSize),
    codes: grid.codes,
    scales: grid.scales,
    zeroPoints: grid.zeroPoints,
  };
  return { quantized, dampeningUsed, error };
}

/** The plain block layout out of GPTQ options (the quantized record carries no GPTQ settings). */
function pickConfig(cfg: GptqConfig): BlockQuantConfig {
  return { bits: cfg.bits, blockSize: cfg.blockSize, symmetric: cfg.symmetric };
}
