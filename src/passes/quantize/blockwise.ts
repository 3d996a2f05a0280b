// Block-wise integer weight quantization along the input dimension (the layout of com.microsoft
// MatMulNBits): each output row is cut into blocks of `blockSize` input columns, the last block ragged
// when in_features is not a multiple, and every block gets a float scale (and a zero point when
// asymmetric). Codes are unsigned: w ~ (code - zero) * scale, with zero = 2^(bits-1) when symmetric.
import { blocksPerRow, type BlockQuantConfig, type BlockQuantized } from '../../core/block-quant.js';
import { fromFloat32, toFloat32 } from '../../formats/dtype.js';

/**
 * How a checkpoint format's own quantizer picks codes, beyond the stored layout. The defaults are MatMulNBits'
 * (symmetric codes over all 2^bits levels as ggml's Q4_0, float32 scales of either sign); the Hugging Face formats set the rest.
 */
export interface QuantGrid {
  /**
   * Symmetric codes over the whole signed range -2^(bits-1)..2^(bits-1)-1, scale absmax / (2^(bits-1) - 1/2), rounding
   * half to even (torch.round): compressed-tensors' calculate_qparams (quantization/utils/helpers.py: bit_range / 2)
   * and AutoGPTQ's / GPTQModel's Quantizer (quantization/quantizer.py: scale = 2 absmax / maxq, zero (maxq + 1) / 2).
   */
  fullRange?: boolean;
  /** Scales rounded up to float16 before use, for formats that store them so (GPTQ's and AWQ's `scales`). */
  float16Scales?: boolean;
  /**
   * Smallest asymmetric zero point: GPTQ's v1 checkpoints store zero - 1 in 4 bits, so zero 0 cannot be stored; a block
   * whose range starts at 0 then gets zero 1 and scale max / (levels - 1) (codes 1..levels).
   */
  minZero?: number;
}

/**
 * Rounds a positive scale up to the next float16, so the block's extremes stay within half a step of a code (rounding
 * down would clip them by more); never 0.
 */
function toFloat16Scale(scale: number): number {
  const bits = fromFloat32(Float32Array.of(scale), 'F16');
  if (toFloat32(bits, 'F16')[0]! < scale) {
    const next = (bits[0]! | (bits[1]! << 8)) + 1;
    bits[0] = next & 255;
    bits[1] = next >> 8;
  }
  const r = toFloat32(bits, 'F16')[0]!;
  return r > 0 ? r : 2 ** -24;
}

export interface BlockParams {
  scale: number;
  zero: number;
}

/**
 * Scale and zero point for one block, its range times `shrink` (1: min/max; clip.ts searches smaller ones).
 * Symmetric: zero 2^(bits-1) and scale = -m / 2^(bits-1) with m the block's value of largest magnitude, so m takes
 * code 0 and every code is used (the scale is negative when m is positive); the Hugging Face grids (`fullRange`) keep
 * |m| / (2^(bits-1) - 1/2) and positive scales. Asymmetric: the range [min(w, 0), max(w, 0)]
 * spread over all 2^bits codes, zero rounded to an integer code.
 */
export function blockParams(
  values: ArrayLike<number>,
  start: number,
  end: number,
  cfg: BlockQuantConfig & QuantGrid,
  shrink = 1,
): BlockParams {
  const p = rawBlockParams(values, start, end, cfg, shrink);
  if (cfg.float16Scales) p.scale = toFloat16Scale(p.scale);
  return p;
}

function rawBlockParams(
  values: ArrayLike<number>,
  start: number,
  end: number,
  cfg: BlockQuantConfig & QuantGrid,
  shrink: number,
): BlockParams {
  const levels = (1 << cfg.bits) - 1;
  if (cfg.symmetric) {
    // The value of largest magnitude, with its sign (the first of equal ones).
    let extreme = 0;
    for (let i = start; i < end; i++) if (Math.abs(values[i]!) > Math.abs(extreme)) extreme = values[i]!;
    extreme *= shrink;
    const half = 1 << (cfg.bits - 1);
    if (extreme === 0) return { scale: 1, zero: half };
    if (cfg.fullRange) return { scale: Math.abs(extreme) / (half - 0.5), zero: half };
    // All 2^bits codes, as ggml's Q4_0 / Q8_0 do: the extreme lands on code 0 (-half steps), so the scale takes the
    // opposite sign and its magnitude is extreme / half, a step 1/(half - 1) finer than absmax / (half - 1) on codes
    // 1..2^bits-1; the other side reaches half - 1 steps.
    return { scale: extreme / -half, zero: half };
  }
  let lo = 0;
  let hi = 0;
  for (let i = start; i < end; i++) {
    lo = Math.min(lo, values[i]!);
    hi = Math.max(hi, values[i]!);
  }
  lo *= shrink;
  hi *= shrink;
  const minZero = cfg.minZero ?? 0;
  if (hi === lo) return { scale: 1, zero: minZero };
  const scale = (hi - lo) / levels;
  const zero = Math.min(levels, Math.max(0, Math.round(-lo / scale)));
  return zero >= minZero ? { scale, zero } : { scale: hi / (levels - minZero), zero: minZero };
}

/** The code of one value under a block's parameters (Math.round, or half to even as torch.round; clamped). */
export function quantizeValue(x: number, p: BlockParams, bits: number, halfToEven = false): number {
  const levels = (1 << bits) - 1;
  const q = (halfToEven ? roundHalfEven(x / p.scale) : Math.round(x / p.scale)) + p.zero;
  return q < 0 ? 0 : Math.min(q, levels);
}

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function dequantizeValue(code: number, p: BlockParams): number {
  return (code - p.zero) * p.scale;
}

/**
 * Picks one block's parameters from values[start..end), whose first value is input column `col`
 * (min/max by default; clip.ts's search weighs each column by its activation energy).
 */
export type BlockChooser = (values: ArrayLike<number>, start: number, end: number, col: number) => BlockParams;

/** Round-to-nearest quantization of a row-major [rows, cols] matrix; `choose` picks each block's range (default min/max). */
export function quantizeRtn(
  w: Float32Array,
  rows: number,
  cols: number,
  cfg: BlockQuantConfig & QuantGrid,
  choose?: BlockChooser,
): BlockQuantized {
  const nb = blocksPerRow(cols, cfg.blockSize);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * nb);
  const zeroPoints = cfg.symmetric ? null : new Uint8Array(rows * nb);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const start = r * cols + b * cfg.blockSize;
      const end = r * cols + Math.min(cols, (b + 1) * cfg.blockSize);
      const p = choose ? choose(w, start, end, b * cfg.blockSize) : blockParams(w, start, end, cfg);
      // Stored scales are float32: quantize with the value the runtime will see.
      p.scale = Math.fround(p.scale);
      scales[r * nb + b] = p.scale;
      if (zeroPoints) zeroPoints[r * nb + b] = p.zero;
      for (let i = start; i < end; i++) codes[i] = quantizeValue(w[i]!, p, cfg.bits, cfg.fullRange);
    }
  }
  const { bits, blockSize, symmetric } = cfg;
  return { bits, blockSize, symmetric, rows, cols, blocksPerRow: nb, codes, scales, zeroPoints };
}
