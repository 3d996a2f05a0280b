// GPTQ on a small random layer with correlated calibration inputs: lower output error than
// round-to-nearest (int4 sym and asym, natural and act order), the reported error is the exact loss
// on the dampened H, codes/scales in the quantizeRtn layout, and the same result as RTN on diagonal H.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gptqQuantize, type GptqConfig } from '../../src/passes/quantize/gptq.js';
import { quantizeRtn } from '../../src/passes/quantize/blockwise.js';
import { blocksPerRow, dequantize, type BlockQuantized } from '../../src/core/block-quant.js';
import { InputError } from '../../src/core/errors.js';
import { correlatedLayer, outputError } from './correlated-layer.js';

const ROWS = 64;
const COLS = 100; // groups of 32: three full, one of 4
const TOKENS = 400;

/** The quantized matrix in float64, as GPTQ saw it (no float32 rounding of the products). */
function exactValues(q: BlockQuantized): Float64Array {
  const out = new Float64Array(q.rows * q.cols);
  const half = 1 << (q.bits - 1);
  for (let r = 0; r < q.rows; r++)
    for (let c = 0; c < q.cols; c++) {
      const b = r * q.blocksPerRow + Math.floor(c / q.blockSize);
      out[r * q.cols + c] = (q.codes[r * q.cols + c]! - (q.zeroPoints ? q.zeroPoints[b]! : half)) * q.scales[b]!;
    }
  return out;
}

function meanDiag(h: Float64Array, n: number): number {
  let s = 0;
  for (let j = 0; j < n; j++) s += h[j * n + j]!;
  return s / n;
}

const { w, h } = correlatedLayer(1, ROWS, COLS, TOKENS, 12);

for (const symmetric of [true, false]) {
  for (const actOrder of [false, true]) {
    const name = `int4 ${symmetric ? 'sym' : 'asym'}${actOrder ? ' act-order' : ''}`;
    test(`GPTQ ${name}, group 32 over 100 inputs: output error below RTN's, error figure exact`, () => {
      const cfg: GptqConfig = { bits: 4, blockSize: 32, symmetric, actOrder };
      const rtn = outputError(w, dequantize(quantizeRtn(w, ROWS, COLS, cfg)), h, ROWS, COLS);
      const res = gptqQuantize(w, ROWS, COLS, h, TOKENS, cfg);
      const q = res.quantized;
      const gptq = outputError(w, dequantize(q), h, ROWS, COLS);
      console.log(`# ${name}: ||W X^T - W' X^T||^2 GPTQ ${gptq.toFixed(2)} vs RTN ${rtn.toFixed(2)} (ratio ${(gptq / rtn).toFixed(3)})`);
      assert.ok(gptq < rtn, `GPTQ ${gptq} >= RTN ${rtn}`);
      assert.equal(res.dampeningUsed, 0.01);

      // The layout of quantizeRtn: [rows, cols] codes in range, [rows, blocks] float32 scales.
      const nb = blocksPerRow(COLS, 32);
      assert.equal(q.blocksPerRow, nb);
      assert.equal(q.codes.length, ROWS * COLS);
      assert.equal(q.scales.length, ROWS * nb);
      assert.equal(q.zeroPoints === null, symmetric);
      if (q.zeroPoints) assert.equal(q.zeroPoints.length, ROWS * nb);
      assert.ok(q.codes.every((c) => c <= 15));
      assert.deepEqual({ bits: q.bits, blockSize: q.blockSize, symmetric: q.symmetric }, { bits: 4, blockSize: 32, symmetric });

      // Sequential OBS steps add up exactly: error * n = loss of the result on the dampened H.
      const exact = outputError(w, exactValues(q), h, ROWS, COLS, 0.01 * meanDiag(h, COLS));
      assert.ok(Math.abs(res.error * TOKENS - exact) < 1e-6 * exact, `error ${res.error * TOKENS} vs ${exact}`);
    });
  }
}

test('GPTQ int8 asym beats RTN too', () => {
  const cfg: GptqConfig = { bits: 8, blockSize: 32, symmetric: false };
  const rtn = outputError(w, dequantize(quantizeRtn(w, ROWS, COLS, cfg)), h, ROWS, COLS);
  const gptq = outputError(w, dequantize(gptqQuantize(w, ROWS, COLS, h, TOKENS, cfg).quantized), h, ROWS, COLS);
  console.log(`# int8 asym: GPTQ ${gptq.toExponential(3)} vs RTN ${rtn.toExponential(3)}`);
  assert.ok(gptq < rtn);
});

test('on a diagonal H nothing propagates: GPTQ equals RTN code for code (both orders)', () => {
  const diag = new Float64Array(COLS * COLS);
  for (let j = 0; j < COLS; j++) diag[j * COLS + j] = 1 + j;
  for (const actOrder of [false, true]) {
    for (const symmetric of [true, false]) {
      const cfg = { bits: 4 as const, blockSize: 32, symmetric };
      const rtn = quantizeRtn(w, ROWS, COLS, cfg);
      const q = gptqQuantize(w, ROWS, COLS, diag, TOKENS, { ...cfg, actOrder }).quantized;
      assert.deepEqual(q.codes, rtn.codes);
      assert.deepEqual(q.scales, rtn.scales);
      assert.deepEqual(q.zeroPoints, rtn.zeroPoints);
    }
  }
});

test('the lazy block size changes the arithmetic order only', () => {
  const cfg: GptqConfig = { bits: 4, blockSize: 32, symmetric: false };
  const a = gptqQuantize(w, ROWS, COLS, h, TOKENS, cfg);
  for (const lazyBlock of [1, 20, 48, 1000]) {
    const b = gptqQuantize(w, ROWS, COLS, h, TOKENS, { ...cfg, lazyBlock });
    assert.ok(Math.abs(a.error - b.error) < 1e-9 * a.error, `lazy ${lazyBlock}: ${a.error} vs ${b.error}`);
  }
});

test('an input that never fired gets zero weights; bad arguments throw InputError', () => {
  const hd = Float64Array.from(h);
  const dead = 7;
  for (let j = 0; j < COLS; j++) hd[dead * COLS + j] = hd[j * COLS + dead] = 0;
  for (const symmetric of [true, false]) {
    const v = dequantize(gptqQuantize(w, ROWS, COLS, hd, TOKENS, { bits: 4, blockSize: 32, symmetric, actOrder: true }).quantized);
    // === 0: under a negative scale the zero code dequantizes to -0, as onnxruntime's kernels compute it.
    for (let r = 0; r < ROWS; r++) assert.ok(v[r * COLS + dead] === 0, `row ${r}: ${v[r * COLS + dead]}`);
  }
  assert.throws(() => gptqQuantize(w, ROWS, COLS, h, 0, { bits: 4, blockSize: 32, symmetric: true }), InputError);
  assert.throws(() => gptqQuantize(w, ROWS, COLS + 1, h, TOKENS, { bits: 4, blockSize: 32, symmetric: true }), InputError);
  assert.throws(() => gptqQuantize(w, ROWS, COLS, h, TOKENS, { bits: 4, blockSize: 0, symmetric: true }), InputError);
});
