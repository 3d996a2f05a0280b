// Packed q/k/v and gate/up products (the CPU default form's): the same logits as one product per module, in float32
// and at int4, and per-row block quantization gives a packed matrix exactly the codes of its modules quantized apart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, MHA, exportedArtifact, tempDir } from '../support.js';
import { GraphBuilder, decodeModel, encodeModel } from '../../src/formats/onnx/graph.js';
import { ExternalDataWriter } from '../../src/formats/onnx/external-data.js';
import { openHfModel } from '../../src/model/checkpoint.js';
import { buildDecoderGraph } from '../../src/model/decoder.js';
import type { LinearEmitter } from '../../src/model/linear.js';
import { matMulNBitsLinear } from '../../src/passes/quantize/matmul-nbits.js';
import { quantizeRtn } from '../../src/passes/quantize/blockwise.js';
import { DecoderModel } from '../../src/runtime/decoder.js';

const PROMPTS = [
  [1, 300, 261, 270, 5, 290, 280, 301, 262, 263, 310, 299],
  [1, 44, 260, 319],
];

/** The inplace artifact of `source` with its graph rebuilt by `linear`, packed or not, into a copy of the folder. */
async function rebuilt(source: string, linear: LinearEmitter | undefined, pack: boolean): Promise<string> {
  const dir = join(tempDir(), 'artifact');
  cpSync(await exportedArtifact(source, 'inplace'), dir, { recursive: true });
  rmSync(join(dir, 'model.onnx.data'));
  const model = await openHfModel(source);
  const writer = new ExternalDataWriter(join(dir, 'model.onnx.data'), 'model.onnx.data');
  const g = new GraphBuilder(writer);
  try {
    await buildDecoderGraph(g, model.spec, model.weights, { attention: 'inplace', windowedCache: true, linear, packProjections: pack });
  } finally {
    writer.close();
    await model.close();
  }
  writeFileSync(join(dir, 'model.onnx'), encodeModel(g, 'llmopt_decoder', { opset: 17, producerVersion: 'test' }));
  return dir;
}

const opTypes = (dir: string) => decodeModel(readFileSync(join(dir, 'model.onnx'))).graph!.node!.map((n) => n.opType!);

async function worstDiff(a: string, b: string): Promise<number> {
  const [ma, mb] = [await DecoderModel.open(a, { device: 'cpu' }), await DecoderModel.open(b, { device: 'cpu' })];
  const [la, lb] = [await ma.forward(ma.createCache(2, 16), PROMPTS), await mb.forward(mb.createCache(2, 16), PROMPTS)];
  let worst = 0;
  for (let i = 0; i < la.data.length; i++) worst = Math.max(worst, Math.abs(la.data[i]! - lb.data[i]!));
  return worst;
}

const int4: LinearEmitter = matMulNBitsLinear({
  accuracyLevel: 4,
  quantize: (layer, w) => quantizeRtn(w, layer.outFeatures, layer.inFeatures, { bits: 4, blockSize: 16, symmetric: false }),
});

for (const [name, source] of [
  ['mha (tied)', MHA],
  ['gqa (q/k/v biases)', GQA],
] as const) {
  for (const [precision, linear, tolerance] of [
    // float32: the products' sums run in the same order per output column; 1e-5 allows another GEMM blocking.
    ['float32', undefined, 1e-5],
    // int4 at accuracy_level 4: the same codes and the same int8 activation blocks; 1e-4 for the kernel's tiling.
    ['int4', int4, 1e-4],
  ] as const) {
    test(`${name} ${precision}: packed q/k/v and gate/up give the logits of one product per module (within ${tolerance})`, async () => {
      const packed = await rebuilt(source, linear, true);
      const apart = await rebuilt(source, linear, false);
      const matmul = precision === 'int4' ? 'MatMulNBits' : 'MatMul';
      const count = (dir: string) => opTypes(dir).filter((t) => t === matmul).length;
      // Per layer: q, k, v, o, gate, up, down apart; qkv, o, gate_up, down packed.
      const layers = JSON.parse(readFileSync(join(source, 'config.json'), 'utf8')).num_hidden_layers as number;
      assert.equal(count(apart) - count(packed), 3 * layers, 'three products fewer per layer');
      const worst = await worstDiff(packed, apart);
      console.log(`# ${name} ${precision}: max |packed - apart| = ${worst.toExponential(3)}`);
      assert.ok(worst <= tolerance, `max diff ${worst}`);
    });
  }
}

test('a group whose modules differ in bits (a mix: v_proj at 8) keeps one MatMulNBits per module, same logits', async () => {
  const mixed: LinearEmitter = matMulNBitsLinear({
    accuracyLevel: 4,
    quantize: (layer, w) =>
      quantizeRtn(w, layer.outFeatures, layer.inFeatures, {
        bits: layer.module.endsWith('v_proj') ? 8 : 4,
        blockSize: 16,
        symmetric: false,
      }),
  });
  const packed = await rebuilt(GQA, mixed, true);
  const nodes = opTypes(packed);
  // Per layer (3): q, k, v apart, o, gate_up, down; and the untied lm_head.
  assert.equal(nodes.filter((t) => t === 'MatMulNBits').length, 3 * 6 + 1);
  assert.equal(await worstDiff(packed, await rebuilt(GQA, mixed, false)), 0);
});

test('the default inplace export rotates with RotaryEmbedding and packs; the fused form keeps one product per module', async () => {
  const inplace = opTypes(await exportedArtifact(GQA, 'inplace'));
  assert.equal(inplace.filter((t) => t === 'RotaryEmbedding').length, 2 * 3, 'one per q and k per layer');
  assert.equal(inplace.filter((t) => t === 'MatMul').length >= 3 * 2, true);
  const fused = opTypes(await exportedArtifact(GQA, 'fused'));
  assert.equal(fused.filter((t) => t === 'RotaryEmbedding').length, 0);
  assert.equal(fused.filter((t) => t === 'MatMul').length, 3 * 7 + 1, 'seven products per layer and the head');
});

test('per-row blocks: a packed [q; k; v] matrix quantizes to exactly the codes, scales and zero points of q, k, v apart', () => {
  const cols = 40; // a ragged last block (16-wide blocks)
  const rows = [24, 8, 8];
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  const parts = rows.map((r) => Float32Array.from({ length: r * cols }, random));
  const packedW = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    packedW.set(p, at);
    at += p.length;
  }
  for (const symmetric of [false, true]) {
    const cfg = { bits: 4 as const, blockSize: 16, symmetric };
    const whole = quantizeRtn(packedW, 40, cols, cfg);
    const apart = parts.map((p, i) => quantizeRtn(p, rows[i]!, cols, cfg));
    const cat = (pick: (q: (typeof apart)[number]) => ArrayLike<number>) => apart.flatMap((q) => Array.from(pick(q)));
    assert.deepEqual(
      Array.from(whole.codes),
      cat((q) => q.codes),
    );
    assert.deepEqual(
      Array.from(whole.scales),
      cat((q) => q.scales),
    );
    if (!symmetric)
      assert.deepEqual(
        Array.from(whole.zeroPoints!),
        cat((q) => q.zeroPoints!),
      );
  }
});
