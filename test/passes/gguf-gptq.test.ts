// GPTQ onto ggml's block types: on a layer with correlated inputs it lowers the output error below
// llama.cpp's round-to-nearest for every type, and with uncorrelated inputs the K-quant codes are
// llama.cpp's round-to-nearest ones (same scales, same rounding, same bytes).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { GgmlType } from '../../src/formats/gguf/ggml-types.js';
import { dequantizeRows, quantizeRows } from '../../src/formats/gguf/quants/index.js';
import { gptqQuantizeGguf } from '../../src/passes/quantize/gguf-gptq.js';
import { correlatedLayer, outputError } from './correlated-layer.js';

const ROWS = 24;
const COLS = 256;
const TOKENS = 384;
const TYPES: GgmlType[] = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q4_K', 'Q5_K', 'Q6_K'];

test('GPTQ in GGUF blocks: lower output error than llama.cpp’s RTN on correlated inputs, for every type', () => {
  const { w, h } = correlatedLayer(11, ROWS, COLS, TOKENS, 6);
  const ratios: string[] = [];
  for (const type of TYPES) {
    const rtn = outputError(w, dequantizeRows(type, quantizeRows(type, w, ROWS, COLS), ROWS, COLS), h, ROWS, COLS);
    const bytes = gptqQuantizeGguf(type, w, ROWS, COLS, h, TOKENS, {});
    assert.equal(bytes.length, quantizeRows(type, w, ROWS, COLS).length, `${type}: GGUF block layout size`);
    const gptq = outputError(w, dequantizeRows(type, bytes, ROWS, COLS), h, ROWS, COLS);
    ratios.push(`${type} ${(gptq / rtn).toFixed(3)}`);
    const needed = type === 'Q4_0' || type === 'Q4_K' ? 0.8 : 1;
    assert.ok(gptq < needed * rtn, `${type}: GPTQ output error ${gptq} vs RTN ${rtn}`);
    const act = outputError(
      w,
      dequantizeRows(type, gptqQuantizeGguf(type, w, ROWS, COLS, h, TOKENS, { actOrder: true }), ROWS, COLS),
      h,
      ROWS,
      COLS,
    );
    assert.ok(act < rtn, `${type} act order: ${act} vs RTN ${rtn}`);
  }
  console.log(`# GPTQ / RTN output error: ${ratios.join(', ')}`);
});

test('uncorrelated inputs: GPTQ’s K-quant codes are llama.cpp’s round-to-nearest bytes', () => {
  const { w } = correlatedLayer(12, 8, 512, 1, 1);
  const diag = new Float64Array(512 * 512);
  for (let j = 0; j < 512; j++) diag[j * 512 + j] = 1 + (j % 7);
  for (const type of ['Q4_K', 'Q5_K', 'Q6_K'] as GgmlType[]) {
    const mine = gptqQuantizeGguf(type, w, 8, 512, diag, 10, {});
    assert.ok(Buffer.from(mine).equals(Buffer.from(quantizeRows(type, w, 8, 512))), type);
  }
});

test('GPTQ in GGUF blocks refuses rows that do not fit the block', () => {
  const { w, h } = correlatedLayer(13, 4, 96, 64, 2);
  assert.throws(() => gptqQuantizeGguf('Q4_K', w, 4, 96, h, 64, {}), /96 columns is not a multiple of its 256-element block/);
  assert.throws(() => gptqQuantizeGguf('Q4_0', w, 4, 96, h, 0, {}), /GPTQ needs calibration tokens/);
});
