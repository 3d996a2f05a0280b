// The GGUF clip search without llama.cpp: Q8_0's shrink grid never above llama.cpp's round-to-nearest block (and never
// stores -128), the unit-importance searches below round-to-nearest's squared error for every block type, GPTQ's
// Q8_0 grid with the search, and the pass on a tiny llama (unit and calibrated importance, tensor by tensor).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { fp16ToFp32 } from '../../src/formats/gguf/quants/float.js';
import { dequantizeRows, quantizeRows } from '../../src/formats/gguf/quants/index.js';
import { chooseLegacyBlock, searchQ8Block } from '../../src/formats/gguf/quants/legacy.js';
import { gptqQuantizeGguf } from '../../src/passes/quantize/gguf-gptq.js';
import { quantizeGguf } from '../../src/passes/quantize/gguf.js';
import { readGgufHeader, readGgufTensor } from '../../src/formats/gguf/file.js';
import type { ImatrixEntry } from '../../src/formats/gguf/quants/imatrix.js';
import { MHA, SAMPLE_TEXT, tempDir } from '../support.js';

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
const gaussian = (rand: () => number) => Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand());

/** Blocks of 32 of every kind a block search meets: gaussian, outliers, one-sided, constant, all zero, tiny, sparse. */
function testBlocks(rand: () => number, n: number): Float32Array {
  const x = new Float32Array(n * 32);
  for (let b = 0; b < n; b++) {
    const kind = b % 7;
    for (let j = 0; j < 32; j++) {
      const g = gaussian(rand) * 0.02;
      x[b * 32 + j] = [g, rand() < 0.06 ? g * 12 : g, Math.abs(g), 0.013, 0, g * 1e-6, rand() < 0.2 ? g : 0][kind]!;
    }
  }
  return x;
}

/** Weighted squared error of one dequantized block. */
function blockError(x: Float32Array, y: Float32Array, at: number, weight: Float32Array | null): number {
  let e = 0;
  for (let j = 0; j < 32; j++) e += (weight ? weight[j]! : 1) * (x[at + j]! - y[at + j]!) ** 2;
  return e;
}

test("Q8_0 shrink search: no block above llama.cpp's round-to-nearest error, weighted or not; -128 never stored", () => {
  const rand = seeded(11);
  const n = 700;
  const x = testBlocks(rand, n);
  const ref = dequantizeRows('Q8_0', quantizeRows('Q8_0', x, n, 32), n, 32);
  const weights = [null, Float32Array.from({ length: 32 }, () => Math.exp(4 * (rand() - 0.5)))];
  for (const weight of weights) {
    const bytes = quantizeRows('Q8_0', x, n, 32, { searchQ8: true, ...(weight ? { importance: weight } : {}) });
    const mine = dequantizeRows('Q8_0', bytes, n, 32);
    let better = 0;
    for (let b = 0; b < n; b++) {
      const [e, r] = [blockError(x, mine, b * 32, weight), blockError(x, ref, b * 32, weight)];
      assert.ok(e <= r, `block ${b} (kind ${b % 7}): searched error ${e} above round-to-nearest's ${r}`);
      if (e < r) better++;
      for (let j = 0; j < 32; j++) assert.notEqual(bytes[b * 34 + 2 + j], 0x80, `block ${b}: code -128 stored`);
    }
    assert.ok(better > n / 2, `the search improved only ${better} of ${n} blocks`);
  }
  // A block that rounds exactly (all zero, a constant that is a code times its fp16 scale) stays llama.cpp's bytes.
  const L = new Uint8Array(32);
  const zero = new Float32Array(32);
  assert.deepEqual(searchQ8Block(zero, 0, L, null), chooseLegacyBlock('Q8_0', zero, 0, new Uint8Array(32)));
  const exact = Float32Array.from({ length: 32 }, (_, j) => (j === 31 ? 127 : 8 * j - 127) * fp16ToFp32(0x1400));
  const codes = new Uint8Array(32);
  assert.deepEqual(searchQ8Block(exact, 0, L, null), chooseLegacyBlock('Q8_0', exact, 0, codes));
  assert.deepEqual(L, codes);
});

test("--clip search without calibration (unit importance): below round-to-nearest's squared error for every block type", () => {
  const rand = seeded(5);
  const [rows, cols] = [16, 1024];
  const w = Float32Array.from({ length: rows * cols }, () => gaussian(rand) * 0.05 * (rand() < 0.01 ? 8 : 1));
  const ones = new Float32Array(cols).fill(1);
  for (const type of ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q4_K', 'Q5_K', 'Q6_K'] as const) {
    const error = (bytes: Uint8Array) => dequantizeRows(type, bytes, rows, cols).reduce((e, v, i) => e + (v - w[i]!) ** 2, 0);
    const rtn = error(quantizeRows(type, w, rows, cols));
    const searched = error(quantizeRows(type, w, rows, cols, { importance: ones, searchQ8: true }));
    assert.ok(searched < rtn, `${type}: searched ${searched} not below round-to-nearest ${rtn}`);
  }
});

test('GPTQ with the search: Q8_0 scales searched under diag(H), the other types unchanged', () => {
  const rand = seeded(3);
  const [rows, cols, tokens] = [8, 64, 256];
  const w = Float32Array.from({ length: rows * cols }, () => gaussian(rand) * (rand() < 0.05 ? 0.5 : 0.05));
  const X = Float64Array.from({ length: tokens * cols }, (_, i) => gaussian(rand) * (1 + (i % cols) / 8));
  const H = new Float64Array(cols * cols);
  for (let t = 0; t < tokens; t++)
    for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) H[i * cols + j]! += X[t * cols + i]! * X[t * cols + j]!;
  const outputError = (q: Float32Array) => {
    let e = 0;
    for (let t = 0; t < tokens; t++)
      for (let r = 0; r < rows; r++) {
        let d = 0;
        for (let j = 0; j < cols; j++) d += (w[r * cols + j]! - q[r * cols + j]!) * X[t * cols + j]!;
        e += d * d;
      }
    return e;
  };
  const plain = gptqQuantizeGguf('Q8_0', w, rows, cols, H, tokens, {});
  const searched = gptqQuantizeGguf('Q8_0', w, rows, cols, H, tokens, { searchQ8: true });
  assert.ok(!Buffer.from(plain).equals(Buffer.from(searched)), 'the search changed no Q8_0 scale');
  const [ep, es] = [outputError(dequantizeRows('Q8_0', plain, rows, cols)), outputError(dequantizeRows('Q8_0', searched, rows, cols))];
  assert.ok(es <= ep * 1.02, `GPTQ Q8_0 output error with the search ${es}, without ${ep}`);
  for (const type of ['Q4_0', 'Q4_1'] as const) {
    const a = gptqQuantizeGguf(type, w, rows, cols, H, tokens, {});
    assert.deepEqual(gptqQuantizeGguf(type, w, rows, cols, H, tokens, { searchQ8: true }), a, `${type} changed`);
  }
});

test('quantizeGguf --clip search on a tiny llama: every block-typed tensor searched, calibrated where llmopt measured', async () => {
  const dir = tempDir('llmopt-gguf-clip-');
  const o = { to: 'q4_0' as const, exclude: [], quantizeEmbeddings: false, fallback: true, method: 'rtn' as const };
  const paths = { rtn: join(dir, 'rtn.gguf'), unit: join(dir, 'unit.gguf'), calib: join(dir, 'calib.gguf') };
  await quantizeGguf(MHA, paths.rtn, o);
  const unit = await quantizeGguf(MHA, paths.unit, { ...o, clip: 'search' });
  const entries: ImatrixEntry[] = [];
  const calib = await quantizeGguf(MHA, paths.calib, { ...o, clip: 'search', calib: SAMPLE_TEXT, onImportance: (e) => entries.push(e) });
  // Two layers of q/k/v/o/gate/up in Q4_0 and the tied token_embd in Q8_0 (ffn_down's 80 columns fall back to F16).
  assert.deepEqual(unit.searched, { calibrated: 0, unit: 13 });
  assert.deepEqual(calib.searched, { calibrated: 12, unit: 1 });
  assert.equal(unit.calibrationTokens, 0);
  assert.ok(calib.calibrationTokens > 0);
  assert.deepEqual(entries.map((e) => e.name).sort(), [...new Set(entries.map((e) => e.name))].sort());
  assert.equal(entries.length, 12);
  for (const e of entries) assert.ok(e.tokens === calib.calibrationTokens && e.sums.every((v) => v > 0), e.name);
  const [r, u, c] = [paths.rtn, paths.unit, paths.calib].map((p) => readGgufHeader(p));
  for (const t of r.tensors) {
    const bytes = async (f: typeof r) => Buffer.from(await readGgufTensor(f, f.tensors.find((x) => x.name === t.name)!));
    const [br, bu, bc] = [await bytes(r), await bytes(u), await bytes(c)];
    if (t.type === 'F32' || t.type === 'F16') {
      assert.ok(br.equals(bu) && br.equals(bc), `${t.name} (${t.type}) changed`);
      continue;
    }
    assert.ok(!br.equals(bu), `${t.name} (${t.type}): the unit search wrote round-to-nearest's bytes`);
    // token_embd has no calibrated importance (llama-imatrix does not measure it either): the same unit search.
    if (t.name === 'token_embd.weight') assert.ok(bu.equals(bc), 'token_embd differs between the two searches');
    else assert.ok(!bu.equals(bc), `${t.name}: the calibrated importance changed nothing`);
  }
});
