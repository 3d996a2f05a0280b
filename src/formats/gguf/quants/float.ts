// ggml's float storage types (F32, F16, BF16) and the half-precision conversions every quantized block's
// scales go through, bit for bit as ggml converts them (round to nearest even; ggml's NaN encodings).

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** A float's IEEE-754 single-precision bits. */
export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0]!;
}

/** The float of single-precision bits. */
export function f32FromBits(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0]!;
}

/**
 * float32 -> IEEE half, ggml's ggml_compute_fp32_to_fp16 (the FP16 library's branch-free conversion): round
 * to nearest even, subnormals kept, overflow to infinity, every NaN to 0x7E00. Used for each block scale.
 */
export function fp32ToFp16(x: number): number {
  const fr = Math.fround;
  const scaleToInf = f32FromBits(0x77800000);
  const scaleToZero = f32FromBits(0x08800000);
  let base = fr(fr(Math.abs(fr(x)) * scaleToInf) * scaleToZero);
  const w = f32Bits(x);
  const shl1 = (w + w) >>> 0;
  const sign = w & 0x80000000;
  let bias = (shl1 & 0xff000000) >>> 0;
  if (bias < 0x71000000) bias = 0x71000000;
  base = fr(f32FromBits(((bias >>> 1) + 0x07800000) >>> 0) + base);
  const bits = f32Bits(base);
  const expBits = (bits >>> 13) & 0x7c00;
  const mantissaBits = bits & 0x0fff;
  const nonsign = expBits + mantissaBits;
  return ((sign >>> 16) | (shl1 > 0xff000000 ? 0x7e00 : nonsign)) & 0xffff;
}

/** IEEE half bits -> float (exact). */
export function fp16ToFp32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** float32 -> bfloat16 as ggml_compute_fp32_to_bf16: round to nearest even, a NaN kept quiet. */
export function fp32ToBf16(x: number): number {
  const u = f32Bits(x);
  if ((u & 0x7fffffff) >>> 0 > 0x7f800000) return ((u >>> 16) | 64) & 0xffff;
  return ((u + (0x7fff + ((u >>> 16) & 1))) >>> 16) & 0xffff;
}

export function bf16ToFp32(h: number): number {
  return f32FromBits((h & 0xffff) << 16);
}

/** F32 / F16 / BF16 rows: the elements themselves, little-endian. */
export function quantizeFloat(type: 'F32' | 'F16' | 'BF16', data: Float32Array): Uint8Array {
  if (type === 'F32') return new Uint8Array(Float32Array.from(data).buffer);
  const out = new Uint16Array(data.length);
  const conv = type === 'F16' ? fp32ToFp16 : fp32ToBf16;
  for (let i = 0; i < data.length; i++) out[i] = conv(data[i]!);
  return littleEndian16(out);
}

export function dequantizeFloat(type: 'F32' | 'F16' | 'BF16', bytes: Uint8Array, n: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  if (type === 'F32') {
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }
  const conv = type === 'F16' ? fp16ToFp32 : bf16ToFp32;
  for (let i = 0; i < n; i++) out[i] = conv(view.getUint16(2 * i, true));
  return out;
}

function littleEndian16(v: Uint16Array): Uint8Array {
  const out = new Uint8Array(v.length * 2);
  for (let i = 0; i < v.length; i++) {
    out[2 * i] = v[i]! & 0xff;
    out[2 * i + 1] = v[i]! >> 8;
  }
  return out;
}
