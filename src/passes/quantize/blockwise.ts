// Block-wise integer weight quantization along the input dimension (the layout of com.microsoft
// MatMulNBits): each output row is cut into blocks of `blockSize` input columns, the last block ragged
// when in_features is not a multiple, and every block gets a float scale (and a zero point when
// asymmetric). Codes are unsigned: w ~ (code - zero) * scale, with zero = 2^(bits-1) when symmetric.
import { blocksPerRow, type BlockQuantConfig, type BlockQuantized } from '../../core/block-quant.js';

export interface BlockParams {
  scale: number;
  zero: number;
}

/**
 * Scale and zero point for one block. Symmetric: scale = max|w| / (2^(bits-1) - 1), zero 2^(bits-1),
 * so codes span [1, 2^bits - 1] around the midpoint. Asymmetric: the range [min(w, 0), max(w, 0)]
 * spread over all 2^bits codes, zero rounded to an integer code.
 */
export function blockParams(values: ArrayLike<number>, start: number, end: number, cfg: BlockQuantConfig): BlockParams {
  const levels = (1 << cfg.bits) - 1;
  if (cfg.symmetric) {
    let absmax = 0;
    for (let i = start; i < end; i++) absmax = Math.max(absmax, Math.abs(values[i]!));
    const half = 1 << (cfg.bits - 1);
    return { scale: absmax === 0 ? 1 : absmax / (half - 1), zero: half };
  }
  let lo = 0;
  let hi = 0;
  for (let i = start; i < end; i++) {
    lo = Math.min(lo, values[i]!);
    hi = Math.max(hi, values[i]!);
  }
  if (hi === lo) return { scale: 1, zero: 0 };
  const scale = (hi - lo) / levels;
  return { scale, zero: Math.min(levels, Math.max(0, Math.round(-lo / scale))) };
}

/** The code of one value under a block's parameters (round half away from zero, clamped). */
export function quantizeValue(x: number, p: BlockParams, bits: number): number {
  const levels = (1 << bits) - 1;
  const q = Math.round(x / p.scale) + p.zero;
  return q < 0 ? 0 : Math.min(q, levels);
}

export function dequantizeValue(code: number, p: BlockParams): number {
  return (code - p.zero) * p.scale;
}

/** Round-to-nearest quantization of a row-major [rows, cols] matrix. */
export function quantizeRtn(w: Float32Array, rows: number, cols: number, cfg: BlockQuantConfig): BlockQuantized {
  const nb = blocksPerRow(cols, cfg.blockSize);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * nb);
  const zeroPoints = cfg.symmetric ? null : new Uint8Array(rows * nb);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const start = r * cols + b * cfg.blockSize;
      const end = r * cols + Math.min(cols, (b + 1) * cfg.blockSize);
      const p = blockParams(w, start, end, cfg);
      // Stored scales are float32: quantize with the value the runtime will see.
      p.scale = Math.fround(p.scale);
      scales[r * nb + b] = p.scale;
      if (zeroPoints) zeroPoints[r * nb + b] = p.zero;
      for (let i = start; i < end; i++) codes[i] = quantizeValue(w[i]!, p, cfg.bits);
    }
  }
  return { ...cfg, rows, cols, blocksPerRow: nb, codes, scales, zeroPoints };
}
