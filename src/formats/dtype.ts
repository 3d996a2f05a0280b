// Element types of safetensors files, and conversion of their little-endian bytes to and from float32.
// Bulk conversions run over typed-array views of aligned buffers, so they stay fast for large tensors.

import { InputError } from '../core/errors.js';

/** Element types of the safetensors format that llmopt reads (names as they appear in the header). */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Whether `name` is one of the dtypes in {@link DTYPE_BYTES}. */
export function isDType(name: unknown): name is DType {
  return typeof name === 'string' && Object.hasOwn(DTYPE_BYTES, name);
}

// Typed-array views read and write the host's byte order; safetensors is little-endian.
const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// One shared scratch word for reinterpreting a float32 as its bits without allocating.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

function float32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

function bitsToFloat32(bits: number): number {
  scratchU32[0] = bits;
  return scratchF32[0]!;
}

/** Value of an IEEE 754 binary16 given its 16 bits. */
export function float16ToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

// float32 bits -> binary16 bits with round-to-nearest-even; shared by the scalar and bulk paths.
function float32BitsToFloat16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) {
    // Keep NaN a NaN (quiet, top payload bits kept) and infinity an infinity.
    return mantissa ? sign | 0x7e00 | (mantissa >>> 13) : sign | 0x7c00;
  }
  if (exponent > 142) return sign | 0x7c00; // |x| >= 2^16: beyond the largest half even before rounding
  if (exponent >= 113) {
    // Normal half. A carry out of the mantissa bumps the exponent, which is the correct rounding,
    // and a carry out of the largest exponent lands on infinity (0x7c00).
    let half = ((exponent - 112) << 10) | (mantissa >>> 13);
    const rest = mantissa & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
    return sign | half;
  }
  // Subnormal half (or zero): value in units of 2^-24 is the 24-bit significand shifted right.
  const shift = 126 - exponent;
  if (shift > 25) return sign; // below half the smallest subnormal: rounds to zero
  const significand = mantissa | 0x800000;
  let half = significand >>> shift;
  const rest = significand & ((1 << shift) - 1);
  const midpoint = 1 << (shift - 1);
  if (rest > midpoint || (rest === midpoint && half & 1)) half++;
  return sign | half;
}

/** Bits of the IEEE 754 binary16 nearest to `x` (ties to even; overflow to infinity; NaN stays NaN). */
export function float32ToFloat16Bits(x: number): number {
  return float32BitsToFloat16Bits(float32Bits(x));
}

/** Value of a bfloat16 given its 16 bits. */
export function bfloat16ToFloat32(bits: number): number {
  return bitsToFloat32((bits & 0xffff) << 16);
}

function float32BitsToBfloat16Bits(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return ((bits >>> 16) | 0x40) & 0xffff; // quiet NaN
  // Adding 0x7fff plus the lowest kept bit rounds to nearest with ties to even.
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Bits of the bfloat16 nearest to `x` (ties to even; NaN stays NaN). */
export function float32ToBfloat16Bits(x: number): number {
  return float32BitsToBfloat16Bits(float32Bits(x));
}

/**
 * Value of an 8-bit float in the e4m3fn layout (sign, 4 exponent bits with bias 7, 3 mantissa bits):
 * no infinities, NaN only at 0x7F and 0xFF, largest finite 448.
 */
export function float8e4m3ToFloat32(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exponent = (bits >>> 3) & 0xf;
  const mantissa = bits & 0x7;
  if (exponent === 0xf && mantissa === 0x7) return NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -9;
  return sign * (1 + mantissa / 8) * 2 ** (exponent - 7);
}

// Lookup tables turn the 16- and 8-bit formats into float32 with one indexed load per element.
let float16Table: Float32Array | undefined;
let float8e4m3Table: Float32Array | undefined;

function float16Values(): Float32Array {
  if (!float16Table) {
    float16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) float16Table[bits] = float16ToFloat32(bits);
  }
  return float16Table;
}

function float8e4m3Values(): Float32Array {
  if (!float8e4m3Table) {
    float8e4m3Table = new Float32Array(256);
    for (let bits = 0; bits < 256; bits++) float8e4m3Table[bits] = float8e4m3ToFloat32(bits);
  }
  return float8e4m3Table;
}

function requireLittleEndianHost(): void {
  if (!hostIsLittleEndian) throw new Error('llmopt reads tensor data on little-endian hosts only');
}

// A buffer whose start is a multiple of `alignment`, copying only when the input is misaligned.
function aligned(raw: Uint8Array, alignment: number): { buffer: ArrayBufferLike; byteOffset: number } {
  if (raw.byteOffset % alignment === 0) return { buffer: raw.buffer, byteOffset: raw.byteOffset };
  return { buffer: raw.slice().buffer, byteOffset: 0 };
}

/**
 * Converts little-endian tensor bytes of any numeric dtype into a new Float32Array.
 * I64 and F64 values beyond float32 range or precision are rounded as float32 does.
 */
export function toFloat32(raw: Uint8Array, dtype: DType): Float32Array {
  requireLittleEndianHost();
  const width = DTYPE_BYTES[dtype];
  if (raw.byteLength % width !== 0) {
    throw new InputError(`${raw.byteLength} bytes is not a whole number of ${dtype} elements (${width} bytes each)`);
  }
  const count = raw.byteLength / width;
  const out = new Float32Array(count);
  const { buffer, byteOffset } = aligned(raw, width);
  switch (dtype) {
    case 'F32':
      new Uint8Array(out.buffer).set(raw);
      break;
    case 'F64':
      out.set(new Float64Array(buffer, byteOffset, count));
      break;
    case 'F16': {
      const table = float16Values();
      const bits = new Uint16Array(buffer, byteOffset, count);
      for (let i = 0; i < count; i++) out[i] = table[bits[i]!]!;
      break;
    }
    case 'BF16': {
      const bits = new Uint16Array(buffer, byteOffset, count);
      const outBits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) outBits[i] = bits[i]! << 16;
      break;
    }
    case 'F8_E4M3': {
      const table = float8e4m3Values();
      for (let i = 0; i < count; i++) out[i] = table[raw[i]!]!;
      break;
    }
    case 'I64': {
      // Two 32-bit halves instead of BigInt64Array, which would allocate a BigInt per element.
      const low = new Uint32Array(buffer, byteOffset, count * 2);
      const high = new Int32Array(buffer, byteOffset, count * 2);
      for (let i = 0; i < count; i++) out[i] = high[2 * i + 1]! * 4294967296 + low[2 * i]!;
      break;
    }
    case 'I32':
      out.set(new Int32Array(buffer, byteOffset, count));
      break;
    case 'I16':
      out.set(new Int16Array(buffer, byteOffset, count));
      break;
    case 'I8':
      out.set(new Int8Array(buffer, byteOffset, count));
      break;
    case 'U8':
      out.set(raw);
      break;
    case 'BOOL':
      for (let i = 0; i < count; i++) out[i] = raw[i] ? 1 : 0;
      break;
  }
  return out;
}

/**
 * Encodes float32 values as little-endian bytes of `dtype`, rounding to nearest even.
 * For F32 the result is a view sharing memory with `values` (no copy).
 */
export function fromFloat32(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  requireLittleEndianHost();
  if (dtype === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const count = values.length;
  const bits = new Uint32Array(values.buffer, values.byteOffset, count);
  const out = new Uint16Array(count);
  if (dtype === 'F16') {
    for (let i = 0; i < count; i++) out[i] = float32BitsToFloat16Bits(bits[i]!);
  } else {
    for (let i = 0; i < count; i++) out[i] = float32BitsToBfloat16Bits(bits[i]!);
  }
  return new Uint8Array(out.buffer);
}
