// ggml's legacy 32-element block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: quantized as llama-quantize does
// (ggml_quantize_chunk -> quantize_q4_0 ...: the `_ref` round-to-nearest without an importance matrix,
// the `_impl` weighted scale search with one; Q8_0 ignores importance), llmopt's shrink search of a Q8_0 scale
// (searchQ8Block, which llama.cpp has none of), and dequantized.
import { fp16ToFp32, fp32ToFp16 } from './float.js';
import { makeQkx3Quants, makeQxQuants } from './search.js';

const fr = Math.fround;
export const QK = 32;

export type LegacyType = 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q8_0';

export const LEGACY_BLOCK_BYTES: Record<LegacyType, number> = { Q4_0: 18, Q4_1: 20, Q5_0: 22, Q5_1: 24, Q8_0: 34 };

/** The block parameters one block is stored with (fp16 bits of its scale, and of its min where it has one). */
export interface LegacyBlock {
  d: number;
  m: number;
}

/** C's float -> int8_t conversion of an in-range value (truncation toward zero, then the low byte). */
const toInt8 = (v: number) => (Math.trunc(v) << 24) >> 24;
/** C's roundf: half away from zero. */
const roundf = (v: number) => (v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5));

/** Writes one block's header and codes (codes L[0..32) as unsigned levels: 0..15, 0..31, or int8 for Q8_0). */
export function packLegacyBlock(type: LegacyType, out: Uint8Array, o: number, p: LegacyBlock, L: ArrayLike<number>): void {
  out[o] = p.d & 0xff;
  out[o + 1] = p.d >> 8;
  if (type === 'Q8_0') {
    for (let j = 0; j < QK; j++) out[o + 2 + j] = L[j]! & 0xff;
    return;
  }
  let q = o + 2;
  if (type === 'Q4_1' || type === 'Q5_1') {
    out[o + 2] = p.m & 0xff;
    out[o + 3] = p.m >> 8;
    q = o + 4;
  }
  if (type === 'Q5_0' || type === 'Q5_1') {
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      qh |= ((L[j]! >> 4) & 1) << j;
      qh |= ((L[j + 16]! >> 4) & 1) << (j + 16);
    }
    out[q] = qh & 0xff;
    out[q + 1] = (qh >>> 8) & 0xff;
    out[q + 2] = (qh >>> 16) & 0xff;
    out[q + 3] = (qh >>> 24) & 0xff;
    q += 4;
  }
  for (let j = 0; j < 16; j++) out[q + j] = (L[j]! & 0x0f) | ((L[j + 16]! & 0x0f) << 4);
}

/** quantize_row_*_ref for one block of x[at..at+32): llama.cpp's round-to-nearest choice of scale and codes. */
export function chooseLegacyBlock(type: LegacyType, x: ArrayLike<number>, at: number, L: Uint8Array): LegacyBlock {
  if (type === 'Q8_0') {
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[at + j]!));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    for (let j = 0; j < QK; j++) L[j] = toInt8(roundf(fr(x[at + j]! * id))) & 0xff;
    return { d: fp32ToFp16(d), m: 0 };
  }
  if (type === 'Q4_0' || type === 'Q5_0') {
    const half = type === 'Q4_0' ? 8 : 16;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = x[at + j]!;
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -half);
    const id = d ? fr(1 / d) : 0;
    const bias = fr(half + 0.5);
    for (let j = 0; j < QK; j++) L[j] = Math.min(2 * half - 1, toInt8(fr(fr(x[at + j]! * id) + bias)));
    return { d: fp32ToFp16(d), m: 0 };
  }
  const levels = type === 'Q4_1' ? 15 : 31;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < QK; j++) {
    const v = x[at + j]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  min = fr(min);
  max = fr(max);
  const d = fr(fr(max - min) / levels);
  const id = d ? fr(1 / d) : 0;
  for (let j = 0; j < QK; j++) {
    const v = Math.trunc(fr(fr(fr(x[at + j]! - min) * id) + 0.5));
    // Q4_1 clamps to 15 through int8; Q5_1 converts straight to uint8 (its codes cannot pass 31).
    L[j] = type === 'Q4_1' ? Math.min(15, toInt8(v)) : v & 0xff;
  }
  return { d: fp32ToFp16(d), m: fp32ToFp16(min) };
}

/**
 * Q8_0 scale factors tried by {@link searchQ8Block}, relative to llama.cpp's amax / 127: the neighbourhood
 * make_qx_quants walks for the 4- and 5-bit types (127 / (127 + k / 10), k = -10..10), then shrinks 0.99 down to 0.80.
 * At 255 levels clipping pays only for a block's lone outlier, so the shrinks stop at 0.80 (the 4-bit grid's 0.70).
 */
export const Q8_SCALE_FACTORS: readonly number[] = [
  ...Array.from({ length: 21 }, (_, i) => 127 / (127 + (i - 10) / 10)),
  ...Array.from({ length: 20 }, (_, i) => 0.99 - 0.01 * i),
];

/** sum of weight * (x - q * d)^2 over one Q8_0 block, d the stored fp16 scale, in float64. */
function q8Error(x: ArrayLike<number>, at: number, d: number, L: ArrayLike<number>, weight: ArrayLike<number> | null): number {
  let e = 0;
  for (let j = 0; j < QK; j++) {
    const diff = x[at + j]! - ((L[j]! << 24) >> 24) * d;
    e += (weight ? weight[j]! : 1) * diff * diff;
  }
  return e;
}

/**
 * A searched Q8_0 block (llmopt's; llama.cpp always takes amax / 127): llama.cpp's own block first, then for each
 * scale amax * f / 127 of {@link Q8_SCALE_FACTORS}, rounded to fp16 as stored, the codes rounded on it and clamped to
 * [-127, 127] (ggml's int8 dot products assume -128 is never stored), and that scale refit to the codes by weighted
 * least squares. The least error, sum of `weight` * (x - dequantized)^2 (`weight` null: 1), each candidate measured
 * with its fp16 scale, wins: screened by the expanded sum (sxx - 2 d sxl + d^2 sll, one pass per candidate), the
 * winner then measured directly against llama.cpp's block, which it must beat, so no block's error is above its.
 */
export function searchQ8Block(x: ArrayLike<number>, at: number, L: Uint8Array, weight: ArrayLike<number> | null): LegacyBlock {
  const ref = chooseLegacyBlock('Q8_0', x, at, L);
  const refError = q8Error(x, at, fp16ToFp32(ref.d), L, weight);
  if (refError === 0) return ref;
  let amax = 0;
  let sxx = 0;
  for (let j = 0; j < QK; j++) {
    const v = x[at + j]!;
    amax = Math.max(amax, Math.abs(v));
    sxx += (weight ? weight[j]! : 1) * v * v;
  }
  let bestError = Number.POSITIVE_INFINITY;
  let bestH = -1;
  let bestF = 0;
  for (let k = 0; k < Q8_SCALE_FACTORS.length; k++) {
    const h = fp32ToFp16(fr(fr(amax * Q8_SCALE_FACTORS[k]!) / 127));
    const d = fp16ToFp32(h);
    if (!d) continue;
    let sxl = 0;
    let sll = 0;
    for (let j = 0; j < QK; j++) {
      const v = x[at + j]!;
      const q = Math.max(-127, Math.min(127, roundf(v / d)));
      const w = weight ? weight[j]! : 1;
      sxl += w * v * q;
      sll += w * q * q;
    }
    const e = sxx - 2 * d * sxl + d * d * sll;
    if (e < bestError) {
      bestError = e;
      bestH = h;
      bestF = d;
    }
    if (sll > 0) {
      const hr = fp32ToFp16(fr(sxl / sll));
      const dr = fp16ToFp32(hr);
      const er = sxx - 2 * dr * sxl + dr * dr * sll;
      // The refit keeps the codes of scale d: remembered as (refit fp16, code scale d).
      if (er < bestError) {
        bestError = er;
        bestH = hr;
        bestF = d;
      }
    }
  }
  if (bestH < 0) return ref;
  const codes = new Uint8Array(QK);
  for (let j = 0; j < QK; j++) codes[j] = Math.max(-127, Math.min(127, roundf(x[at + j]! / bestF))) & 0xff;
  if (q8Error(x, at, fp16ToFp32(bestH), codes, weight) >= refError) return ref;
  L.set(codes);
  return { d: bestH, m: 0 };
}

/**
 * quantize_row_*_impl for one block, given `weight` = importance * sqrt(sigma2 + x^2): make_qx_quants for
 * the symmetric types, make_qkx3_quants for the ones with a min; codes straight from the search.
 */
export function weightedBlock(
  type: LegacyType,
  x: ArrayLike<number>,
  at: number,
  weight: Float32Array,
  L: Uint8Array,
  Laux: Uint8Array,
): LegacyBlock {
  if (type === 'Q4_0' || type === 'Q5_0') {
    const d = makeQxQuants(QK, type === 'Q4_0' ? 8 : 16, x, at, L, weight);
    return { d: fp32ToFp16(d), m: 0 };
  }
  const r = makeQkx3Quants(QK, type === 'Q4_1' ? 15 : 31, x, at, weight, L, Laux, fr(-0.9), fr(0.05), 36);
  return { d: fp32ToFp16(r.scale), m: fp32ToFp16(-r.min) };
}

/**
 * Quantizes rows of a [rows, cols] matrix (cols a multiple of 32) into `type`'s blocks. `searchQ8`: Q8_0 blocks by
 * {@link searchQ8Block}, weighted by `importance` per column when given (llama.cpp's Q8_0 ignores importance).
 */
export function quantizeLegacy(
  type: LegacyType,
  data: Float32Array,
  rows: number,
  cols: number,
  importance?: Float32Array,
  searchQ8 = false,
): Uint8Array {
  const bytes = LEGACY_BLOCK_BYTES[type];
  const nb = cols / QK;
  const out = new Uint8Array(rows * nb * bytes);
  const L = new Uint8Array(QK);
  const Laux = new Uint8Array(QK);
  const weight = new Float32Array(QK);
  const weighted = importance !== undefined && type !== 'Q8_0';
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    let sigma2 = 0;
    if (weighted) {
      let sumX2 = 0;
      for (let j = 0; j < cols; j++) sumX2 = fr(sumX2 + fr(data[row + j]! * data[row + j]!));
      sigma2 = fr(sumX2 / cols);
    }
    for (let b = 0; b < nb; b++) {
      const at = row + b * QK;
      let p: LegacyBlock;
      if (weighted) {
        for (let j = 0; j < QK; j++) {
          const xj = data[at + j]!;
          weight[j] = fr(importance[b * QK + j]! * fr(Math.sqrt(fr(sigma2 + fr(xj * xj)))));
        }
        p = weightedBlock(type, data, at, weight, L, Laux);
      } else if (type === 'Q8_0' && searchQ8) {
        p = searchQ8Block(data, at, L, importance ? importance.subarray(b * QK, (b + 1) * QK) : null);
      } else {
        p = chooseLegacyBlock(type, data, at, L);
      }
      packLegacyBlock(type, out, (r * nb + b) * bytes, p, L);
    }
  }
  return out;
}

/** dequantize_row_*: codes times the fp16 scale (plus the fp16 min), in float32. */
export function dequantizeLegacy(type: LegacyType, bytes: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const size = LEGACY_BLOCK_BYTES[type];
  for (let b = 0; b < n / QK; b++) {
    const o = b * size;
    const y = b * QK;
    const d = fp16ToFp32(bytes[o]! | (bytes[o + 1]! << 8));
    if (type === 'Q8_0') {
      for (let j = 0; j < QK; j++) out[y + j] = ((bytes[o + 2 + j]! << 24) >> 24) * d;
      continue;
    }
    const hasMin = type === 'Q4_1' || type === 'Q5_1';
    const m = hasMin ? fp16ToFp32(bytes[o + 2]! | (bytes[o + 3]! << 8)) : 0;
    let q = o + (hasMin ? 4 : 2);
    let qh = 0;
    const five = type === 'Q5_0' || type === 'Q5_1';
    if (five) {
      qh = (bytes[q]! | (bytes[q + 1]! << 8) | (bytes[q + 2]! << 16) | (bytes[q + 3]! << 24)) >>> 0;
      q += 4;
    }
    const offset = type === 'Q4_0' ? 8 : type === 'Q5_0' ? 16 : 0;
    for (let j = 0; j < 16; j++) {
      let x0 = bytes[q + j]! & 0x0f;
      let x1 = bytes[q + j]! >> 4;
      if (five) {
        x0 |= ((qh >>> j) << 4) & 0x10;
        x1 |= (qh >>> (j + 12)) & 0x10;
      }
      out[y + j] = hasMin ? fr(fr(x0 * d) + m) : (x0 - offset) * d;
      out[y + j + 16] = hasMin ? fr(fr(x1 * d) + m) : (x1 - offset) * d;
    }
  }
  return out;
}
