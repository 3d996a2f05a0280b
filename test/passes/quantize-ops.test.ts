// The quantized operators against onnxruntime: MatMulNBits packing (bit order, zero points, ragged
// blocks) and accuracy levels, GatherBlockQuantized with a tied head, fp16 and W8A8 exports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { Elem, GraphBuilder, decodeModel, encodeModel } from '../../src/formats/onnx/graph.js';
import { floatLinear, type LinearEmitter } from '../../src/model/linear.js';
import { floatEmbedding, type EmbeddingEmitter } from '../../src/model/embedding.js';
import { uniformBiases, type DecoderSpec } from '../../src/core/spec.js';
import type { WeightSource } from '../../src/core/weights.js';
import { exportModel } from '../../src/passes/export.js';
import { quantizeRtn } from '../../src/passes/quantize/blockwise.js';
import { dequantize, type BlockQuantConfig, type BlockQuantized } from '../../src/core/block-quant.js';
import {
  matMulNBitsLinear,
  matMulNBitsNode,
  packGatherData,
  packMatMulNBits,
  quantizedEmbedding,
  unpackMatMulNBits,
  writeMatMulNBits,
  type AccuracyLevel,
  type QuantizedLayerBytes,
} from '../../src/passes/quantize/matmul-nbits.js';
import { fp16Embedding, fp16Linear, quantizePerChannelInt8, w8a8Linear } from '../../src/passes/quantize/precision.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { GQA, MHA, exportedArtifact, tempDir } from '../support.js';

const OPTS = { opset: 17, producerVersion: 'test' };

/** Deterministic values in [-0.5, 0.5). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

/** y[m, n] = sum_k x[m, k] w[n, k], accumulated in float64. */
function matmulT(x: Float32Array, w: Float32Array, M: number, N: number, K: number): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += x[m * K + k]! * w[n * K + k]!;
      y[m * N + n] = acc;
    }
  return y;
}

/** max |a - b| / max |b|: error relative to the output's scale. */
function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return worst / scale;
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** Writes `g` (with in-line weights) to a temp file and runs it once on CPU. */
async function runGraph(g: GraphBuilder, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  const path = join(tempDir(), 'graph.onnx');
  writeFileSync(path, encodeModel(g, 'test', OPTS));
  const session = await ort.InferenceSession.create(path, { logSeverityLevel: 3 });
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

const CONFIGS: { bits: 4 | 8; blockSize: number; symmetric: boolean; cols: number }[] = [];
for (const bits of [4, 8] as const)
  for (const blockSize of [16, 32, 64, 128])
    for (const symmetric of [true, false]) for (const cols of [172, 72, 128]) CONFIGS.push({ bits, blockSize, symmetric, cols });
const describe = (c: (typeof CONFIGS)[number]) => `bits ${c.bits} block ${c.blockSize} ${c.symmetric ? 'sym' : 'asym'} K ${c.cols}`;
const ROWS = 24;

test('packing follows the spec: low nibble first, zero points two per byte, ragged blocks padded with the zero point', () => {
  // One row, K 20, block 16: block 0 full, block 1 holds 4 codes and 12 padding.
  const codes = Uint8Array.from({ length: 20 }, (_, i) => i % 16);
  const q: BlockQuantized = {
    bits: 4,
    blockSize: 16,
    symmetric: false,
    rows: 1,
    cols: 20,
    blocksPerRow: 2,
    codes,
    scales: new Float32Array([0.5, 0.25]),
    zeroPoints: new Uint8Array([3, 9]),
  };
  const p = packMatMulNBits(q);
  assert.equal(p.weight.length, 2 * 8);
  assert.deepEqual([...p.weight.subarray(0, 3)], [0x10, 0x32, 0x54]);
  // codes 0..3 of block 1, then pairs of the block's zero point 9.
  assert.deepEqual([...p.weight.subarray(8)], [0x10, 0x32, 0x99, 0x99, 0x99, 0x99, 0x99, 0x99]);
  assert.deepEqual([...p.zeroPoints!], [0x93]);
  const sym = packMatMulNBits({ ...q, symmetric: true, zeroPoints: null });
  assert.equal(sym.zeroPoints, null);
  assert.equal(sym.weight[15], 0x88, 'symmetric padding is the default zero point 8');
  const eight = packMatMulNBits({ ...q, bits: 8, codes: Uint8Array.from({ length: 20 }, (_, i) => 200 + i) });
  assert.deepEqual([...eight.weight.subarray(16, 22)], [216, 217, 218, 219, 9, 9]);
  assert.deepEqual([...eight.zeroPoints!], [3, 9]);
  assert.throws(() => packMatMulNBits({ ...q, codes: new Uint8Array(20).fill(16) }), /does not fit in 4 bits/);
});

test('pack then unpack returns the quantized matrix, for bits 4 and 8, blocks 16..128, ragged K', () => {
  for (const c of CONFIGS) {
    const q = quantizeRtn(values(ROWS * c.cols, c.cols + c.blockSize), ROWS, c.cols, c);
    const back = unpackMatMulNBits(packMatMulNBits(q), { bits: c.bits, blockSize: c.blockSize, rows: ROWS, cols: c.cols });
    assert.deepEqual(back, q, describe(c));
  }
});

async function runMatMulNBits(q: BlockQuantized, x: Float32Array, M: number, level: AccuracyLevel): Promise<Float32Array> {
  const g = new GraphBuilder(null);
  g.input('x', Elem.FLOAT, [M, q.cols]);
  const y = matMulNBitsNode(g, writeMatMulNBits(g, 'w', q), q, 'x', '/mm', level);
  g.node('Identity', [y], { name: '/out', outputs: ['y'] });
  g.output('y', Elem.FLOAT, [M, q.rows]);
  const out = await runGraph(g, { x: new ort.Tensor('float32', x, [M, q.cols]) });
  return out.y!.data as Float32Array;
}

// Measured on onnxruntime 1.30 CPU (x86-64): levels 0-3 all take the float32 path (max relative error
// 6.2e-7); level 4 quantizes A to int8 per block and reaches 4.7e-3 relative to the largest output.
const LEVEL_TOLERANCE: Record<AccuracyLevel, number> = { 0: 1e-4, 1: 1e-4, 2: 1e-4, 3: 1e-4, 4: 1e-2 };

test('MatMulNBits in onnxruntime equals x times the dequantized weight, ragged last block included, at accuracy levels 0-4', async () => {
  const M = 5;
  const worst: Record<number, number> = {};
  for (const c of CONFIGS) {
    const q = quantizeRtn(values(ROWS * c.cols, c.cols * 3 + c.blockSize), ROWS, c.cols, c);
    const x = values(M * c.cols, 11);
    const ref = matmulT(x, dequantize(q), M, ROWS, c.cols);
    for (const level of [0, 1, 2, 3, 4] as const) {
      const err = relError(await runMatMulNBits(q, x, M, level), ref);
      worst[level] = Math.max(worst[level] ?? 0, err);
      assert.ok(err < LEVEL_TOLERANCE[level], `${describe(c)} accuracy_level ${level}: relative error ${err}`);
    }
  }
  console.log(
    `# MatMulNBits worst relative error by accuracy_level: ${JSON.stringify(Object.fromEntries(Object.entries(worst).map(([k, v]) => [k, v.toExponential(2)])))}`,
  );
});

test("the activation residual gives accuracy level 4's int8 product float accuracy: bits 4 and 8, blocks 16..128, ragged K", async () => {
  // Rows of [B, S, K] as the decoder feeds them; one row of outliers, as a SwiGLU output has.
  const [B, S] = [2, 3];
  let worst = 0;
  let plain = Number.POSITIVE_INFINITY;
  for (const c of CONFIGS) {
    const q = quantizeRtn(values(ROWS * c.cols, c.cols * 5 + c.blockSize), ROWS, c.cols, c);
    const x = values(B * S * c.cols, 17);
    for (let k = 0; k < c.cols; k += 13) x[k] = x[k]! * 40;
    const ref = matmulT(x, dequantize(q), B * S, ROWS, c.cols);
    const run = async (residual: boolean) => {
      const g = new GraphBuilder(null);
      g.input('x', Elem.FLOAT, [B, S, q.cols]);
      const y = matMulNBitsNode(g, writeMatMulNBits(g, 'w', q), q, 'x', '/mm', 4, residual);
      g.node('Identity', [y], { name: '/out', outputs: ['y'] });
      g.output('y', Elem.FLOAT, [B, S, q.rows]);
      const out = await runGraph(g, { x: new ort.Tensor('float32', x, [B, S, q.cols]) });
      assert.deepEqual(out.y!.dims, [B, S, q.rows]);
      return out.y!.data as Float32Array;
    };
    const err = relError(await run(true), ref);
    worst = Math.max(worst, err);
    plain = Math.min(plain, relError(await run(false), ref));
    // Level 4 alone: 5e-3 to 1.6e-2 here; the residual, quantized again, carries 1/127 of that (measured 2.7e-5 to 8.5e-5).
    assert.ok(err < 2e-4, `${describe(c)}: relative error ${err} with the residual`);
  }
  assert.ok(worst * 40 < plain, `the residual (worst ${worst}) is not far below level 4 alone (best ${plain})`);
  console.log(
    `# MatMulNBits level 4 with the activation residual: worst relative error ${worst.toExponential(2)}; without ${plain.toExponential(2)} at best`,
  );
  assert.throws(
    () =>
      matMulNBitsNode(
        new GraphBuilder(null),
        { weight: 'w', scales: 's', zeroPoints: null },
        { ...CONFIGS[0]!, rows: ROWS },
        'x',
        '/mm',
        0,
        true,
      ),
    /needs accuracy_level 4/,
  );
});

/** An in-memory WeightSource. */
function memoryWeights(tensors: Record<string, { shape: number[]; data: Float32Array }>): WeightSource {
  return {
    has: (name) => name in tensors,
    shape: (name) => tensors[name]!.shape,
    readFloat32: async (name) => tensors[name]!.data.slice(),
  };
}

function tinySpec(vocabSize: number, hiddenSize: number, tiedEmbeddings: boolean): DecoderSpec {
  return {
    architecture: 'llama',
    hiddenSize,
    numLayers: 1,
    numHeads: 1,
    kvHeads: 1,
    headDim: hiddenSize,
    intermediateSize: hiddenSize,
    vocabSize,
    maxPositions: 16,
    rmsNormEps: 1e-5,
    ropeTheta: 1e4,
    ropeScaling: null,
    tiedEmbeddings,
    biases: uniformBiases(false, false),
    qkNorm: false,
    ropeLayers: null,
    weightDtype: 'float32',
    bosTokenId: null,
    eosTokenIds: [],
    padTokenId: null,
  };
}

test('GatherBlockQuantized rows equal the dequantized rows exactly; the tied head equals the float matmul', async () => {
  const V = 40;
  const ids = [0, 7, 39, 7, 12, 1];
  for (const bits of [4, 8] as const)
    for (const symmetric of [true, false])
      for (const h of [64, 72]) {
        const cfg: BlockQuantConfig = { bits, blockSize: 32, symmetric };
        const name = `bits ${bits} ${symmetric ? 'sym' : 'asym'} h ${h}`;
        const table = values(V * h, h + bits);
        const spec = tinySpec(V, h, true);
        const emitter = quantizedEmbedding(cfg);
        const g = new GraphBuilder(null);
        g.input('ids', Elem.INT64, [2, 3]);
        g.input('x', Elem.FLOAT, [2, 3, h]);
        const rows = await emitter.gather(g, memoryWeights({ 'model.embed_tokens.weight': { shape: [V, h], data: table } }), spec, 'ids');
        const logits = emitter.tiedHead(g, spec, 'x');
        g.node('Identity', [rows], { name: '/rows', outputs: ['rows'] });
        g.node('Identity', [logits], { name: '/logits', outputs: ['logits'] });
        g.output('rows', Elem.FLOAT, [2, 3, h]);
        g.output('logits', Elem.FLOAT, [2, 3, V]);
        // Aligned hidden sizes store the codes once (B, read by the gather through a Reshape).
        const codeTensors = g.initializers.filter(
          (t) => t.dataType === Elem.UINT8 && t.dims!.length >= 2 && Number(t.dims![0]) === V && !t.name!.endsWith('_zp'),
        );
        assert.equal(codeTensors.length, h % 32 === 0 ? 1 : 2, `${name}: code tensors ${codeTensors.map((t) => t.name).join(', ')}`);
        const x = values(6 * h, 5);
        const out = await runGraph(g, {
          ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [2, 3]),
          x: new ort.Tensor('float32', x, [2, 3, h]),
        });
        const deq = dequantize(quantizeRtn(table, V, h, cfg));
        const got = out.rows!.data as Float32Array;
        ids.forEach((id, i) =>
          assert.deepEqual(got.subarray(i * h, (i + 1) * h), deq.subarray(id * h, (id + 1) * h), `${name}: row ${id}`),
        );
        const err = relError(out.logits!.data as Float32Array, matmulT(x, deq, 6, V, h));
        assert.ok(err < 1e-4, `${name}: tied head relative error ${err}`);
      }
});

test('GatherBlockQuantized data is the MatMulNBits weight byte for byte when hidden_size is a multiple of the block size', () => {
  for (const bits of [4, 8] as const) {
    const q = quantizeRtn(values(10 * 64, 3), 10, 64, { bits, blockSize: 32, symmetric: false });
    assert.deepEqual(packGatherData(q), packMatMulNBits(q).weight);
  }
});

/** A WeightSource whose `.weight` matrices read back as their RTN-dequantized values. */
function dequantizedWeights(weights: WeightSource, cfg: BlockQuantConfig): WeightSource {
  return {
    has: (n) => weights.has(n),
    shape: (n) => weights.shape(n),
    async readFloat32(n) {
      const w = await weights.readFloat32(n);
      const shape = weights.shape(n);
      if (!n.endsWith('.weight') || shape.length !== 2) return w;
      return dequantize(quantizeRtn(w, shape[0]!, shape[1]!, cfg));
    },
  };
}

const PROMPTS = [
  [1, 300, 261, 270, 5, 290, 280, 301, 262, 263, 310, 299],
  [1, 44, 260, 319],
  [7], // one token: the matrix-vector path of the kernels
];

async function allLogits(dir: string): Promise<Float32Array[]> {
  const model = await DecoderModel.open(dir, { device: 'cpu' });
  try {
    const out: Float32Array[] = [];
    for (const ids of PROMPTS) out.push((await model.forward(model.createCache(1, ids.length), [ids])).data.slice());
    return out;
  } finally {
    await model.release();
  }
}

async function exportWith(source: string, linear: LinearEmitter, embedding?: EmbeddingEmitter): Promise<string> {
  const out = join(tempDir(), 'artifact');
  await exportModel(source, out, { attention: 'fused', layout: 'llmopt', linear, embedding });
  return out;
}

function worstDiff(a: Float32Array[], b: Float32Array[]): number {
  return Math.max(...a.map((x, i) => maxAbs(x, b[i]!)));
}

/** Largest error relative to the largest logit, over the prompts. */
function worstRel(a: Float32Array[], b: Float32Array[]): number {
  return Math.max(...a.map((x, i) => relError(x, b[i]!)));
}

const INT4: BlockQuantConfig = { bits: 4, blockSize: 32, symmetric: false };

for (const [name, dir] of [
  ['mha (tied, hidden 64, intermediate 80)', MHA],
  ['gqa (untied, hidden 48, intermediate 72)', GQA],
] as const) {
  test(`${name}: an int4 MatMulNBits + GatherBlockQuantized export equals a float export of the dequantized weights`, async () => {
    const layers: QuantizedLayerBytes[] = [];
    const rtn = (level: AccuracyLevel) =>
      matMulNBitsLinear({
        quantize: (l, w) => quantizeRtn(w, l.outFeatures, l.inFeatures, INT4),
        accuracyLevel: level,
        onLayer: (r) => layers.push(r),
      });
    const reference = await allLogits(
      await exportWith(dir, (g, weights, layer, x) => floatLinear(g, dequantizedWeights(weights, INT4), layer, x), {
        gather: (g, weights, spec, ids) => floatEmbedding.gather(g, dequantizedWeights(weights, INT4), spec, ids),
        tiedHead: floatEmbedding.tiedHead,
      }),
    );
    const diff = worstDiff(await allLogits(await exportWith(dir, rtn(0), quantizedEmbedding(INT4))), reference);
    assert.ok(
      layers.length > 0 && layers.every((l) => l.quantizedBytes < l.floatBytes / 4),
      'int4 layers take under a quarter of their float bytes',
    );
    // accuracy_level 4 quantizes activations to int8, so it drifts further from the float reference.
    const int8 = await allLogits(await exportWith(dir, rtn(4), quantizedEmbedding(INT4, { accuracyLevel: 4 })));
    const int8Rel = worstRel(int8, reference);
    console.log(
      `# ${name}: max |int4 - dequantized float| logits = ${diff.toExponential(3)} (accuracy_level 0); ${worstDiff(int8, reference).toExponential(3)}, ${int8Rel.toExponential(2)} of the largest logit (accuracy_level 4)`,
    );
    assert.ok(diff < 1e-4, `accuracy_level 0: max diff ${diff}`);
    assert.ok(int8Rel < 5e-2, `accuracy_level 4: relative error ${int8Rel}`);
  });
}

test('matMulNBitsLinear falls back to float MatMul for excluded modules', async () => {
  const q = await exportWith(
    MHA,
    matMulNBitsLinear({
      quantize: (l, w) => quantizeRtn(w, l.outFeatures, l.inFeatures, INT4),
      accuracyLevel: 0,
      exclude: (m) => m.endsWith('down_proj'),
    }),
  );
  const ops = decodeModel(readFileSync(join(q, 'model.onnx'))).graph!.node!.map((n) => `${n.name}:${n.opType}`);
  assert.ok(ops.includes('/model/layers.0/mlp/down_proj/MatMul:MatMul'));
  assert.ok(ops.includes('/model/layers.0/mlp/up_proj/MatMulNBits:MatMulNBits'));
});

for (const [name, dir] of [
  ['mha', MHA],
  ['gqa', GQA],
] as const) {
  test(`${name}: fp16 export logits are within 1e-2 of float and its weights take about half the bytes`, async () => {
    const fp16 = await exportWith(dir, fp16Linear, fp16Embedding);
    const float = await exportedArtifact(dir, 'fused');
    const diff = worstDiff(await allLogits(fp16), await allLogits(float));
    const ratio = statSync(join(fp16, 'model.onnx.data')).size / statSync(join(float, 'model.onnx.data')).size;
    console.log(`# ${name} fp16: max |fp16 - float| logits = ${diff.toExponential(3)}, data size ratio ${ratio.toFixed(3)}`);
    assert.ok(diff < 1e-2, `max diff ${diff}`);
    assert.ok(ratio > 0.45 && ratio < 0.56, `data size ratio ${ratio}`);
  });

  test(`${name}: w8a8 (DynamicQuantizeMatMul) export logits stay close to float`, async () => {
    const w8a8 = await exportWith(dir, w8a8Linear);
    const float = await exportedArtifact(dir, 'fused');
    const a = await allLogits(w8a8);
    const b = await allLogits(float);
    const rel = worstRel(a, b);
    console.log(
      `# ${name} w8a8: max |w8a8 - float| logits = ${worstDiff(a, b).toExponential(3)} (${rel.toExponential(2)} of the largest logit)`,
    );
    // Measured 6.5e-2 (mha) and 9.7e-2 (gqa) on an AVX2 machine: per-tensor 8-bit activations and 7-bit
    // weight codes on these random-weight fixtures, two and three layers deep; the single operator
    // alone is within 4e-3 (test below).
    assert.ok(rel < 0.1, `relative error ${rel}`);
  });
}

test('DynamicQuantizeMatMul equals x times the int8 weight within the error of 8-bit activations', async () => {
  const M = 6,
    K = 96,
    N = 40;
  const w = values(N * K, 21);
  const x = values(M * K, 22);
  const { codes, scales } = quantizePerChannelInt8(w, N, K);
  const g = new GraphBuilder(null);
  g.input('x', Elem.FLOAT, [M, K]);
  const b = g.initializer('b', Elem.INT8, [K, N], new Uint8Array(codes.buffer));
  const s = g.initializer('s', Elem.FLOAT, [N], new Uint8Array(scales.buffer));
  const y = g.op('DynamicQuantizeMatMul', ['x', b, s], '/dqmm', undefined, 'com.microsoft');
  g.node('Identity', [y], { name: '/out', outputs: ['y'] });
  g.output('y', Elem.FLOAT, [M, N]);
  const out = (await runGraph(g, { x: new ort.Tensor('float32', x, [M, K]) })).y!.data as Float32Array;
  const wq = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wq[n * K + k] = codes[k * N + n]! * scales[n]!;
  const err = relError(out, matmulT(x, wq, M, N, K));
  console.log(`# DynamicQuantizeMatMul: relative error vs float with int8 weights ${err.toExponential(2)}`);
  assert.ok(err < 2e-2, `relative error ${err}`);
});

test('onnxruntime CPU folds Cast(float16 initializer) into float32 weights at session creation', async () => {
  const fp16 = await exportWith(MHA, fp16Linear, fp16Embedding);
  const optimized = join(tempDir(), 'optimized.onnx');
  const session = await ort.InferenceSession.create(join(fp16, 'model.onnx'), {
    graphOptimizationLevel: 'all',
    optimizedModelFilePath: optimized,
    logSeverityLevel: 3,
  });
  await session.release();
  const graph = decodeModel(readFileSync(optimized)).graph!;
  const weightCasts = graph.node!.filter((n) => n.opType === 'Cast' && n.name!.endsWith('/WeightCast'));
  const f16 = graph.initializer!.filter((t) => t.dataType === Elem.FLOAT16).map((t) => t.name);
  console.log(`# optimized fp16 model: ${weightCasts.length} weight Casts left, float16 initializers: ${f16.join(', ') || 'none'}`);
  assert.equal(weightCasts.length, 0, 'weight Casts are folded away');
  // Only the embedding table, read by Gather, may stay float16 (when the tied head's Cast was folded into a copy).
  assert.ok(
    f16.every((n) => n === 'model.embed_tokens.weight'),
    `float16 initializers left: ${f16.join(', ')}`,
  );
});
