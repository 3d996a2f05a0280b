// Tests of dtype conversions: exact edge cases of each float format and bulk conversion of every dtype.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DTYPE_BYTES,
  bfloat16ToFloat32,
  float16ToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
  float8e4m3ToFloat32,
  fromFloat32,
  toFloat32,
} from '../../src/formats/dtype.js';

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

test('dtype byte widths', () => {
  assert.deepEqual(DTYPE_BYTES, {
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
  });
});

test('float16 decoding of normals, subnormals, infinities and NaN', () => {
  assert.equal(float16ToFloat32(0x3c00), 1);
  assert.equal(float16ToFloat32(0xc000), -2);
  assert.equal(float16ToFloat32(0x7bff), 65504);
  assert.equal(float16ToFloat32(0x0400), 2 ** -14);
  assert.equal(float16ToFloat32(0x0001), 2 ** -24);
  assert.equal(float16ToFloat32(0x03ff), 1023 * 2 ** -24);
  assert.equal(float16ToFloat32(0x7c00), Infinity);
  assert.equal(float16ToFloat32(0xfc00), -Infinity);
  assert.ok(Number.isNaN(float16ToFloat32(0x7e00)));
  assert.ok(Object.is(float16ToFloat32(0x8000), -0));
});

test('float16 encoding rounds to nearest even and handles the edges', () => {
  assert.equal(float32ToFloat16Bits(1), 0x3c00);
  assert.equal(float32ToFloat16Bits(-2), 0xc000);
  assert.equal(float32ToFloat16Bits(65504), 0x7bff);
  // Ties: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 and goes to the even mantissa (1).
  assert.equal(float32ToFloat16Bits(1 + 2 ** -11), 0x3c00);
  assert.equal(float32ToFloat16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(float32ToFloat16Bits(1 + 2 ** -11 + 2 ** -20), 0x3c01);
  // 65520 is the midpoint between 65504 and 2^16: ties to even overflows to infinity.
  assert.equal(float32ToFloat16Bits(65519), 0x7bff);
  assert.equal(float32ToFloat16Bits(65520), 0x7c00);
  assert.equal(float32ToFloat16Bits(1e6), 0x7c00);
  assert.equal(float32ToFloat16Bits(-1e6), 0xfc00);
  assert.equal(float32ToFloat16Bits(Infinity), 0x7c00);
  assert.equal(float32ToFloat16Bits(-Infinity), 0xfc00);
  const nan = float32ToFloat16Bits(NaN);
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x3ff, 0);
  // Subnormals, their ties, the smallest one and underflow to (signed) zero.
  assert.equal(float32ToFloat16Bits(2 ** -24), 0x0001);
  assert.equal(float32ToFloat16Bits(1023 * 2 ** -24), 0x03ff);
  assert.equal(float32ToFloat16Bits(2.5 * 2 ** -24), 0x0002);
  assert.equal(float32ToFloat16Bits(3.5 * 2 ** -24), 0x0004);
  assert.equal(float32ToFloat16Bits(1023.5 * 2 ** -24), 0x0400);
  assert.equal(float32ToFloat16Bits(2 ** -25), 0x0000);
  assert.equal(float32ToFloat16Bits(2 ** -25 + 2 ** -35), 0x0001);
  assert.equal(float32ToFloat16Bits(2 ** -26), 0x0000);
  assert.equal(float32ToFloat16Bits(-(2 ** -30)), 0x8000);
  assert.equal(float32ToFloat16Bits(-0), 0x8000);
  assert.equal(float32ToFloat16Bits(1e-45), 0x0000);
});

test('float16 round trip is exact for every finite half', () => {
  for (let bits = 0; bits < 0x10000; bits++) {
    if ((bits & 0x7c00) === 0x7c00 && bits & 0x3ff) continue; // NaN payloads need not survive
    assert.equal(float32ToFloat16Bits(float16ToFloat32(bits)), bits);
  }
});

test('bfloat16 conversion rounds to nearest even', () => {
  assert.equal(bfloat16ToFloat32(0x3f80), 1);
  assert.equal(bfloat16ToFloat32(0xc040), -3);
  assert.equal(bfloat16ToFloat32(0x7f80), Infinity);
  assert.ok(Number.isNaN(bfloat16ToFloat32(0x7fc0)));
  assert.equal(float32ToBfloat16Bits(1), 0x3f80);
  // 1 + 2^-8 is halfway between bfloat16 neighbours 1 and 1 + 2^-7: ties to even (1).
  assert.equal(float32ToBfloat16Bits(1 + 2 ** -8), 0x3f80);
  assert.equal(float32ToBfloat16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert.equal(float32ToBfloat16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  assert.equal(float32ToBfloat16Bits(Infinity), 0x7f80);
  assert.equal(float32ToBfloat16Bits(-Infinity), 0xff80);
  assert.equal(float32ToBfloat16Bits(3.4028234663852886e38), 0x7f80); // rounds past the largest finite
  const nan = float32ToBfloat16Bits(NaN);
  assert.equal(nan & 0x7f80, 0x7f80);
  assert.notEqual(nan & 0x7f, 0);
  for (let bits = 0; bits < 0x10000; bits++) {
    if ((bits & 0x7f80) === 0x7f80 && bits & 0x7f) continue;
    assert.equal(float32ToBfloat16Bits(bfloat16ToFloat32(bits)), bits);
  }
});

test('float8 e4m3fn known values', () => {
  assert.equal(float8e4m3ToFloat32(0x38), 1);
  assert.equal(float8e4m3ToFloat32(0xb8), -1);
  assert.equal(float8e4m3ToFloat32(0x7e), 448);
  assert.equal(float8e4m3ToFloat32(0xfe), -448);
  assert.equal(float8e4m3ToFloat32(0x01), 2 ** -9);
  assert.equal(float8e4m3ToFloat32(0x07), 7 * 2 ** -9);
  assert.equal(float8e4m3ToFloat32(0x08), 2 ** -6);
  assert.equal(float8e4m3ToFloat32(0x78), 256);
  assert.equal(float8e4m3ToFloat32(0x00), 0);
  assert.ok(Number.isNaN(float8e4m3ToFloat32(0x7f)));
  assert.ok(Number.isNaN(float8e4m3ToFloat32(0xff)));
});

test('toFloat32 converts every dtype', () => {
  const values = [0, 1, -2, 3, 127];
  const cases: Array<[Parameters<typeof toFloat32>[1], ArrayBufferView, number[]]> = [
    ['F64', new Float64Array([0.5, -1.25, 1e10]), [0.5, -1.25, Math.fround(1e10)]],
    ['F32', new Float32Array([0.5, -1.25, 3]), [0.5, -1.25, 3]],
    ['F16', new Uint16Array([0x3c00, 0xc000, 0x3800]), [1, -2, 0.5]],
    ['BF16', new Uint16Array([0x3f80, 0xc040, 0x3f00]), [1, -3, 0.5]],
    ['F8_E4M3', new Uint8Array([0x38, 0x7e, 0x01]), [1, 448, 2 ** -9]],
    ['I64', new BigInt64Array([0n, -5n, 1n << 40n, -(1n << 33n)]), [0, -5, 2 ** 40, -(2 ** 33)]],
    ['I32', new Int32Array(values), values],
    ['I16', new Int16Array([...values, -32768]), [...values, -32768]],
    ['I8', new Int8Array([...values, -128]), [...values, -128]],
    ['U8', new Uint8Array([0, 1, 255]), [0, 1, 255]],
    ['BOOL', new Uint8Array([0, 1, 1, 0]), [0, 1, 1, 0]],
  ];
  for (const [dtype, view, expected] of cases) {
    assert.deepEqual([...toFloat32(bytesOf(view), dtype)], expected, dtype);
  }
});

test('toFloat32 accepts misaligned input and rejects partial elements', () => {
  const backing = new Uint8Array(9);
  const misaligned = backing.subarray(1);
  misaligned.set(bytesOf(new Float32Array([1.5, -7])));
  assert.deepEqual([...toFloat32(misaligned, 'F32')], [1.5, -7]);
  misaligned.set(bytesOf(new Uint16Array([0x3c00, 0x4000, 0xc400, 0])));
  assert.deepEqual([...toFloat32(misaligned, 'F16')], [1, 2, -4, 0]);
  assert.throws(() => toFloat32(new Uint8Array(3), 'F16'), /not a whole number/);
});

test('fromFloat32 round trips through F32, F16 and BF16', () => {
  const values = new Float32Array([0, -0, 1, -1.5, 0.333333, 65504, 1e-7, Math.fround(Math.PI)]);
  assert.deepEqual(toFloat32(fromFloat32(values, 'F32'), 'F32'), values);
  const half = toFloat32(fromFloat32(values, 'F16'), 'F16');
  const brain = toFloat32(fromFloat32(values, 'BF16'), 'BF16');
  for (let i = 0; i < values.length; i++) {
    assert.equal(half[i], float16ToFloat32(float32ToFloat16Bits(values[i]!)));
    assert.equal(brain[i], bfloat16ToFloat32(float32ToBfloat16Bits(values[i]!)));
  }
  // Values already representable in the narrow format survive exactly.
  const exact = new Float32Array([0.5, -2, 1024, 0.0078125]);
  assert.deepEqual(toFloat32(fromFloat32(exact, 'F16'), 'F16'), exact);
  assert.deepEqual(toFloat32(fromFloat32(exact, 'BF16'), 'BF16'), exact);
});
