// GPTQ onto ggml's block types: on layers with correlated inputs it lowers the output error below
// llama.cpp's round-to-nearest, with or without llama.cpp's importance matrix, for every type; with
// uncorrelated inputs the K-quant codes are llama.cpp's round-to-nearest ones (same scales and bytes).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { GgmlType } from '../../src/formats/gguf/ggml-types.js';
import { dequantizeRows, quantizeRows } from '../../src/formats/gguf/quants/index.js';
import { gptqQuantizeGguf } from '../../src/passes/quantize/gguf-gptq.js';
import { correlatedLayer, outputError } from './correlated-layer.js';

const ROWS = 24;
const COLS = 256;
const TOKENS = 512;
const TYPES: GgmlType[] = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q4_K', 'Q5_K', 'Q6_K'];
/** diag(H) / n: llama-imatrix's importance of each input (mean x^2). */
const meanSquares = (h: Float64Array, cols: number, n: number) => Float32Array.from({ length: cols }, (_, j) => h[j * cols + j]! / n);

for (const latent of [6, 200]) {
  test(`GPTQ in GGUF blocks beats llama.cpp’s RTN, with and without an importance matrix (inputs of rank ~${latent})`, () => {
    const { w, h } = correlatedLayer(11, ROWS, COLS, TOKENS, latent);
    const imp = meanSquares(h, COLS, TOKENS);
    const err = (type: GgmlType, bytes: Uint8Array) => outputError(w, dequantizeRows(type, bytes, ROWS, COLS), h, ROWS, COLS);
    const figures: string[] = [];
    for (const type of TYPES) {
      const rtn = err(type, quantizeRows(type, w, ROWS, COLS));
      const rtnImatrix = err(type, quantizeRows(type, w, ROWS, COLS, { importance: imp }));
      const bytes = gptqQuantizeGguf(type, w, ROWS, COLS, h, TOKENS, {});
      assert.equal(bytes.length, quantizeRows(type, w, ROWS, COLS).length, `${type}: GGUF block layout size`);
      const gptq = err(type, bytes);
      const plain = err(type, gptqQuantizeGguf(type, w, ROWS, COLS, h, TOKENS, { importance: null }));
      const act = err(type, gptqQuantizeGguf(type, w, ROWS, COLS, h, TOKENS, { actOrder: true }));
      figures.push(`${type} ${(gptq / rtn).toFixed(3)} (imatrix RTN ${(rtnImatrix / rtn).toFixed(3)})`);
      const needed = type === 'Q4_0' || type === 'Q4_K' ? 0.8 : 1;
      assert.ok(gptq < needed * rtn, `${type}: GPTQ output error ${gptq} vs RTN ${rtn}`);
      assert.ok(gptq < rtnImatrix, `${type}: GPTQ ${gptq} vs llama.cpp's imatrix RTN ${rtnImatrix}`);
      assert.ok(plain < rtn, `${type} GPTQ on plain-RTN scales: ${plain} vs RTN ${rtn}`);
      assert.ok(act < rtn, `${type} act order: ${act} vs RTN ${rtn}`);
    }
    console.log(`# rank ~${latent}: GPTQ / RTN output error: ${figures.join(', ')}`);
  });
}

test('uncorrelated inputs: GPTQ’s K-quant codes are llama.cpp’s (imatrix) round-to-nearest bytes', () => {
  const { w } = correlatedLayer(12, 8, 512, 1, 1);
  const diag = new Float64Array(512 * 512);
  for (let j = 0; j < 512; j++) diag[j * 512 + j] = 1 + (j % 7);
  const imp = meanSquares(diag, 512, 10);
  for (const type of ['Q4_K', 'Q5_K', 'Q6_K'] as GgmlType[]) {
    const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));
    assert.ok(same(gptqQuantizeGguf(type, w, 8, 512, diag, 10, {}), quantizeRows(type, w, 8, 512, { importance: imp })), type);
    assert.ok(same(gptqQuantizeGguf(type, w, 8, 512, diag, 10, { importance: null }), quantizeRows(type, w, 8, 512)), `${type} plain`);
  }
});

test('GPTQ in GGUF blocks refuses rows that do not fit the block', () => {
  const { w, h } = correlatedLayer(13, 4, 96, 64, 2);
  assert.throws(() => gptqQuantizeGguf('Q4_K', w, 4, 96, h, 64, {}), /96 columns is not a multiple of its 256-element block/);
  assert.throws(() => gptqQuantizeGguf('Q4_0', w, 4, 96, h, 0, {}), /GPTQ needs calibration tokens/);
});
