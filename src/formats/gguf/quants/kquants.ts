// ggml's K-quants (256-element super-blocks): Q4_K and Q5_K (8 sub-blocks of 32 with 6-bit scales and
// mins under fp16 d / dmin) and Q6_K (16 sub-blocks of 16 with int8 scales under fp16 d), quantized as
// llama-quantize does (quantize_row_q4_K_ref / make_qkx2_quants without an importance matrix; the
// `_impl` make_qkx3_quants + make_qp_quants search with one) and dequantized.
import { fp16ToFp32, fp32ToFp16 } from './float.js';
import { GROUP_MAX_EPS, makeQkx2Quants, makeQkx3Quants, makeQpQuants, makeQxQuants, nearestInt } from './search.js';

const fr = Math.fround;
export const QK_K = 256;

export type KType = 'Q4_K' | 'Q5_K' | 'Q6_K';
export const K_BLOCK_BYTES: Record<KType, number> = { Q4_K: 144, Q5_K: 176, Q6_K: 210 };

/**
 * One Q4_K / Q5_K super-block's scales as stored: fp16 bits of d and dmin, and the 6-bit scale and min
 * of each of its 8 sub-blocks; a value is d * sc[j] * q - dmin * m[j].
 */
export interface KScales {
  d: number;
  dmin: number;
  sc: Uint8Array;
  m: Uint8Array;
}

/** One Q6_K super-block's scales: fp16 bits of d and the int8 scale of each of its 16 sub-blocks. */
export interface Q6Scales {
  d: number;
  sc: Int8Array;
  /** Every sub-block's scale below GROUP_MAX_EPS: llama.cpp stores the super-block as all zero bytes. */
  zero: boolean;
}

/** The 12 bytes of packed 6-bit scales and mins (get_scale_min_k4's inverse). */
function packScaleMin(out: Uint8Array, o: number, sc: ArrayLike<number>, m: ArrayLike<number>): void {
  out.fill(0, o, o + 12);
  for (let j = 0; j < 8; j++) {
    const ls = sc[j]!;
    const lm = m[j]!;
    if (j < 4) {
      out[o + j] = ls;
      out[o + j + 4] = lm;
    } else {
      out[o + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
      out[o + j - 4]! |= (ls >> 4) << 6;
      out[o + j]! |= (lm >> 4) << 6;
    }
  }
}

function scaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j]! & 63, q[o + j + 4]! & 63];
  return [(q[o + j + 4]! & 0xf) | ((q[o + j - 4]! >> 6) << 4), (q[o + j + 4]! >> 4) | ((q[o + j]! >> 6) << 4)];
}

/**
 * The scales of one Q4_K / Q5_K super-block x[at..at+256) as llama.cpp chooses them: per sub-block
 * make_qkx2_quants (weights av_x + |x|) without importance, make_qkx3_quants on importance * sqrt(sigma2 + x^2)
 * with it; then the 6-bit codes of scales and mins, by their maxima (ref) or make_qp_quants (impl).
 * `importance` is indexed from `impAt` (the super-block's first column). The search's own codes land in
 * `codes` [256]: llama.cpp keeps them for a sub-block whose stored scale comes out zero.
 */
export function chooseKScales(
  type: 'Q4_K' | 'Q5_K',
  x: ArrayLike<number>,
  at: number,
  codes: Uint8Array,
  importance?: ArrayLike<number>,
  impAt = 0,
): KScales {
  const nmax = type === 'Q4_K' ? 15 : 31;
  const Laux = new Uint8Array(32);
  const weights = new Float32Array(32);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  const sc = new Uint8Array(8);
  const m = new Uint8Array(8);
  if (importance === undefined) {
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      const s = at + 32 * j;
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = fr(sumX2 + fr(x[s + l]! * x[s + l]!));
      const avX = fr(Math.sqrt(fr(sumX2 / 32)));
      for (let l = 0; l < 32; l++) weights[l] = fr(avX + Math.abs(x[s + l]!));
      const r =
        type === 'Q4_K'
          ? makeQkx2Quants(32, nmax, x, s, weights, codes.subarray(32 * j), Laux, -1, fr(0.1), 20)
          : makeQkx2Quants(32, nmax, x, s, weights, codes.subarray(32 * j), Laux, -0.5, fr(0.1), 15);
      scales[j] = r.scale;
      mins[j] = r.min;
      if (r.scale > maxScale) maxScale = r.scale;
      if (r.min > maxMin) maxMin = r.min;
    }
    const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
    for (let j = 0; j < 8; j++) {
      sc[j] = Math.min(63, nearestInt(fr(invScale * scales[j]!)) & 0xff);
      m[j] = Math.min(63, nearestInt(fr(invMin * mins[j]!)) & 0xff);
    }
    return { d: fp32ToFp16(fr(maxScale / 63)), dmin: fp32ToFp16(fr(maxMin / 63)), sc, m };
  }
  let sumX2 = 0;
  for (let l = 0; l < QK_K; l++) sumX2 = fr(sumX2 + fr(x[at + l]! * x[at + l]!));
  const sigma2 = fr(fr(2 * sumX2) / QK_K);
  const sw = new Float32Array(8);
  for (let j = 0; j < 8; j++) {
    const s = at + 32 * j;
    for (let l = 0; l < 32; l++) {
      const xl = x[s + l]!;
      weights[l] = fr(importance[impAt + 32 * j + l]! * fr(Math.sqrt(fr(sigma2 + fr(xl * xl)))));
    }
    let sumW = 0;
    for (let l = 0; l < 32; l++) sumW = fr(sumW + weights[l]!);
    sw[j] = sumW;
    const r = makeQkx3Quants(32, nmax, x, s, weights, codes.subarray(32 * j), Laux, fr(-0.9), fr(0.05), 36);
    scales[j] = r.scale;
    mins[j] = r.min;
  }
  const dBlock = makeQpQuants(8, 63, scales, sc, sw);
  const mBlock = makeQpQuants(8, 63, mins, m, sw);
  for (let j = 0; j < 8; j++) {
    sc[j] = Math.min(63, sc[j]!);
    m[j] = Math.min(63, m[j]!);
  }
  return { d: fp32ToFp16(dBlock), dmin: fp32ToFp16(mBlock), sc, m };
}

/** The float32 scale and offset of sub-block j under stored scales: x ~ d_j * q - m_j. */
export function kSubBlock(s: KScales, j: number): { d: number; m: number } {
  return { d: fr(fp16ToFp32(s.d) * s.sc[j]!), m: fr(fp16ToFp32(s.dmin) * s.m[j]!) };
}

/** Writes one Q4_K / Q5_K super-block from its scales and 256 codes (0..15 or 0..31). */
export function packKBlock(type: 'Q4_K' | 'Q5_K', out: Uint8Array, o: number, s: KScales, L: ArrayLike<number>): void {
  out[o] = s.d & 0xff;
  out[o + 1] = s.d >> 8;
  out[o + 2] = s.dmin & 0xff;
  out[o + 3] = s.dmin >> 8;
  packScaleMin(out, o + 4, s.sc, s.m);
  if (type === 'Q4_K') {
    for (let j = 0; j < QK_K; j += 64) {
      const q = o + 16 + j / 2;
      for (let l = 0; l < 32; l++) out[q + l] = L[j + l]! | (L[j + l + 32]! << 4);
    }
    return;
  }
  const qh = o + 16;
  const ql = o + 48;
  out.fill(0, qh, qh + 32);
  let m1 = 1;
  let m2 = 2;
  for (let n = 0; n < QK_K; n += 64) {
    for (let j = 0; j < 32; j++) {
      let l1 = L[n + j]!;
      if (l1 > 15) {
        l1 -= 16;
        out[qh + j]! |= m1;
      }
      let l2 = L[n + j + 32]!;
      if (l2 > 15) {
        l2 -= 16;
        out[qh + j]! |= m2;
      }
      out[ql + n / 2 + j] = l1 | (l2 << 4);
    }
    m1 <<= 2;
    m2 <<= 2;
  }
}

/**
 * The scales of one Q6_K super-block: make_qx_quants(16, 32) per sub-block (weights x^2, or the importance
 * as given when there is one), the int8 scales relative to the largest, d = its scale / -128.
 */
export function chooseQ6Scales(x: ArrayLike<number>, at: number, codes: Uint8Array, importance?: Float32Array, impAt = 0): Q6Scales {
  const scales = new Float32Array(16);
  let maxScale = 0;
  let maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const qw = importance ? importance.subarray(impAt + 16 * ib, impAt + 16 * ib + 16) : null;
    const scale = makeQxQuants(16, 32, x, at + 16 * ib, codes.subarray(16 * ib), qw);
    scales[ib] = scale;
    if (Math.abs(scale) > maxAbsScale) {
      maxAbsScale = Math.abs(scale);
      maxScale = scale;
    }
  }
  const sc = new Int8Array(16);
  if (maxAbsScale < GROUP_MAX_EPS) return { d: fp32ToFp16(0), sc, zero: true };
  const iscale = fr(-128 / maxScale);
  for (let ib = 0; ib < 16; ib++) sc[ib] = Math.min(127, nearestInt(fr(iscale * scales[ib]!)));
  return { d: fp32ToFp16(fr(1 / iscale)), sc, zero: false };
}

/** Writes one Q6_K super-block from its scales and 256 codes (0..63, value q - 32). */
export function packQ6Block(out: Uint8Array, o: number, s: Q6Scales, L: ArrayLike<number>): void {
  for (let j = 0; j < QK_K; j += 128) {
    const ql = o + j / 2;
    const qh = o + 128 + j / 4;
    for (let l = 0; l < 32; l++) {
      const q1 = L[j + l]!;
      const q2 = L[j + l + 32]!;
      const q3 = L[j + l + 64]!;
      const q4 = L[j + l + 96]!;
      out[ql + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
      out[ql + l + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
      out[qh + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
    }
  }
  for (let i = 0; i < 16; i++) out[o + 192 + i] = s.sc[i]! & 0xff;
  out[o + 208] = s.d & 0xff;
  out[o + 209] = s.d >> 8;
}

/** Quantizes rows (cols a multiple of 256) into K-quant super-blocks. */
export function quantizeK(type: KType, data: Float32Array, rows: number, cols: number, importance?: Float32Array): Uint8Array {
  const size = K_BLOCK_BYTES[type];
  const nb = cols / QK_K;
  const out = new Uint8Array(rows * nb * size);
  const L = new Uint8Array(QK_K);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const at = r * cols + b * QK_K;
      const o = (r * nb + b) * size;
      if (type === 'Q6_K') {
        const s = chooseQ6Scales(data, at, L, importance, b * QK_K);
        if (s.zero) {
          out.fill(0, o, o + size);
          continue;
        }
        const d16 = fp16ToFp32(s.d);
        for (let j = 0; j < 16; j++) {
          const d = fr(d16 * s.sc[j]!);
          if (!d) continue;
          for (let ii = 0; ii < 16; ii++) {
            const l = nearestInt(fr(data[at + 16 * j + ii]! / d));
            L[16 * j + ii] = Math.max(-32, Math.min(31, l)) + 32;
          }
        }
        packQ6Block(out, o, s, L);
        continue;
      }
      const s = chooseKScales(type, data, at, L, importance, b * QK_K);
      const nmax = type === 'Q4_K' ? 15 : 31;
      for (let j = 0; j < 8; j++) {
        const { d, m } = kSubBlock(s, j);
        if (!d) continue;
        for (let ii = 0; ii < 32; ii++) {
          const l = nearestInt(fr(fr(data[at + 32 * j + ii]! + m) / d));
          L[32 * j + ii] = Math.max(0, Math.min(nmax, l));
        }
      }
      packKBlock(type, out, o, s, L);
    }
  }
  return out;
}

/** dequantize_row_q4_K / q5_K / q6_K in float32. */
export function dequantizeK(type: KType, bytes: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const size = K_BLOCK_BYTES[type];
  for (let b = 0; b < n / QK_K; b++) {
    const o = b * size;
    const y = b * QK_K;
    if (type === 'Q6_K') {
      const d = fp16ToFp32(bytes[o + 208]! | (bytes[o + 209]! << 8));
      for (let half = 0; half < 2; half++) {
        const ql = o + 64 * half;
        const qh = o + 128 + 32 * half;
        const sc = o + 192 + 8 * half;
        const yy = y + 128 * half;
        for (let l = 0; l < 32; l++) {
          const is = l >> 4;
          const h = bytes[qh + l]!;
          const q1 = ((bytes[ql + l]! & 0xf) | ((h & 3) << 4)) - 32;
          const q2 = ((bytes[ql + l + 32]! & 0xf) | (((h >> 2) & 3) << 4)) - 32;
          const q3 = ((bytes[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
          const q4 = ((bytes[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
          const s = (i: number) => (bytes[sc + is + i]! << 24) >> 24;
          out[yy + l] = fr(d * s(0)) * q1;
          out[yy + l + 32] = fr(d * s(2)) * q2;
          out[yy + l + 64] = fr(d * s(4)) * q3;
          out[yy + l + 96] = fr(d * s(6)) * q4;
        }
      }
      continue;
    }
    const d = fp16ToFp32(bytes[o]! | (bytes[o + 1]! << 8));
    const min = fp16ToFp32(bytes[o + 2]! | (bytes[o + 3]! << 8));
    for (let j = 0; j < QK_K; j += 64) {
      const is = j / 32;
      const [sc1, m1] = scaleMinK4(is, bytes, o + 4);
      const [sc2, m2] = scaleMinK4(is + 1, bytes, o + 4);
      const d1 = fr(d * sc1);
      const dm1 = fr(min * m1);
      const d2 = fr(d * sc2);
      const dm2 = fr(min * m2);
      for (let l = 0; l < 32; l++) {
        let q1: number;
        let q2: number;
        if (type === 'Q4_K') {
          q1 = bytes[o + 16 + j / 2 + l]! & 0xf;
          q2 = bytes[o + 16 + j / 2 + l]! >> 4;
        } else {
          const h = bytes[o + 16 + l]!;
          const lo = bytes[o + 48 + j / 2 + l]!;
          q1 = (lo & 0xf) + (h & (1 << is) ? 16 : 0);
          q2 = (lo >> 4) + (h & (2 << is) ? 16 : 0);
        }
        out[y + j + l] = fr(fr(d1 * q1) - dm1);
        out[y + j + l + 32] = fr(fr(d2 * q2) - dm2);
      }
    }
  }
  return out;
}
