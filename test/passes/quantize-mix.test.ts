// quantize --mix: the written bytes match each policy's plan (ONNX initializers, GGUF tensors), k-quant-m raises
// what llama.cpp's Q4_K_M raises, auto stays within its budget, and a pruned model's zeros stay zeros.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { dequantize } from '../../src/core/block-quant.js';
import { tensorBytes } from '../../src/formats/gguf/ggml-types.js';
import { readGgufHeader } from '../../src/formats/gguf/file.js';
import { ggufTensorDecision } from '../../src/formats/gguf/mix.js';
import { Checkpoint } from '../../src/formats/safetensors.js';
import { readOnnxInitializers, type OnnxInitializer } from '../../src/formats/onnx/initializers.js';
import { inspectModel } from '../../src/model/inspect.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { parseSparsity, prune } from '../../src/passes/prune/prune.js';
import { linearModules } from '../../src/passes/targets.js';
import { quantizeGguf } from '../../src/passes/quantize/gguf.js';
import { unpackMatMulNBits } from '../../src/passes/quantize/matmul-nbits.js';
import { ggufMixType, matMulNBitsBytes, planOnnxMix, spendBudget } from '../../src/passes/quantize/mix-policy.js';
import { quantize, type QuantizeOptions } from '../../src/passes/quantize/quantize.js';
import { exportedArtifact, MHA, SAMPLE_TEXT, tempDir } from '../support.js';
import { klDivergence, logSoftmax } from '../../src/eval/metrics.js';
import { forwardOnce, openModel } from '../../src/runtime/model.js';
import { loadModelCalibration } from '../../src/passes/calibration.js';
import { measureSensitivity } from '../../src/passes/quantize/sensitivity.js';
import { openHfModel } from '../../src/model/checkpoint.js';
import { quantizeRtn } from '../../src/passes/quantize/blockwise.js';

const BASE: QuantizeOptions = {
  to: 'int4',
  method: 'rtn',
  blockSize: 16,
  symmetric: true,
  accuracyLevel: 0,
  exclude: [],
  quantizeEmbeddings: false,
  format: 'onnx',
  attention: 'fused',
};

/** Bytes of each module's MatMulNBits initializers (`<module>.weight_Q<bits>`, `_scales`, `_zp`) and its bits. */
function moduleBytes(inits: OnnxInitializer[]): Map<string, { bytes: number; bits: number }> {
  const out = new Map<string, { bytes: number; bits: number }>();
  for (const i of inits) {
    const m = /^(.+)\.weight_(Q(\d+)|scales|zp)$/.exec(i.name);
    if (!m) continue;
    const e = out.get(m[1]!) ?? { bytes: 0, bits: 0 };
    e.bytes += i.byteLength;
    if (m[3]) e.bits = Number(m[3]);
    out.set(m[1]!, e);
  }
  return out;
}

const spec = () => readModelSpec(MHA);

test('k-quant-m raises, for ONNX, exactly the tensors llama.cpp Q4_K_M gives more than Q4_K (32 layers)', async () => {
  const s = { ...spec(), numLayers: 32 };
  const targets = linearModules(s);
  const low = { bits: 4, blockSize: 32, symmetric: true } as const;
  const plan = await planOnnxMix({ policy: 'k-quant-m', low, high: { ...low, bits: 8 }, spec: s, targets, headQuantized: true });
  const kinds = { v: 'attn_v', down: 'ffn_down' } as Record<string, string>;
  for (const t of targets) {
    const name = `blk.${t.layer}.${kinds[t.kind] ?? 'attn_q'}.weight`;
    const d = ggufTensorDecision('q4_k_m', { name, layer: t.layer, nLayers: 32, rows: t.rows, cols: 256, arch: 'llama' });
    assert.equal(plan!.raised.has(t.module), d.wanted === 'Q6_K', t.module);
  }
  // llama.cpp's use_more_bits at 32 layers: 0-3, 28-31 and every third between: 16 layers, v and down each.
  assert.equal(plan!.raised.size, 2 * 16 + 1);
  assert.ok(plan!.raised.has('lm_head'));
});

test('spendBudget raises by gain per byte, skips what does not fit, never what does not help', () => {
  const items = [
    { module: 'a', extraBytes: 100, gain: 1 }, // 0.01 per byte
    { module: 'b', extraBytes: 10, gain: 0.5 }, // 0.05
    { module: 'c', extraBytes: 60, gain: 0.9 }, // 0.015
    { module: 'd', extraBytes: 5, gain: 0 },
  ];
  assert.deepEqual([...spendBudget(items, 75)].sort(), ['b', 'c']);
  assert.deepEqual([...spendBudget(items, 200)].sort(), ['a', 'b', 'c']);
  assert.deepEqual([...spendBudget(items, 9)], []);
});

test('a mix written as ONNX: each module stores the bytes and bits its plan says; the manifest records them', async () => {
  for (const mix of ['edges8', 'k-quant-m'] as const) {
    for (const symmetric of [true, false]) {
      const out = join(tempDir(), 'q');
      const report = await quantize(MHA, out, { ...BASE, symmetric, blockSize: 32, mix });
      const written = moduleBytes(await readOnnxInitializers(join(out, 'model.onnx')));
      const manifest = JSON.parse(readFileSync(join(out, 'llmopt.json'), 'utf8'));
      const record = manifest.passes.find((p: { pass: string }) => p.pass === 'quantize').options;
      assert.equal(record.mix, mix);
      let planned = 0;
      for (const t of linearModules(spec())) {
        const bits = report.mix!.raised.includes(t.module) ? 8 : 4;
        const bytes = matMulNBitsBytes(t.rows, t.cols, { bits, blockSize: 32, symmetric });
        assert.deepEqual(written.get(t.module), { bytes, bits }, `${mix} ${t.module}`);
        assert.equal(record.tensorBits[t.module], bits, t.module);
        planned += bytes;
      }
      // inspect reads the same bits from the artifact's initializers.
      assert.deepEqual((await inspectModel(out)).weightBits, record.tensorBits);
      const weights = linearModules(spec()).reduce((a, t) => a + t.rows * t.cols, 0);
      assert.ok(Math.abs(report.mix!.bitsPerWeight - (planned * 8) / weights) < 1e-12);
    }
  }
  // GPTQ quantizes each module at its mix's width.
  const g = join(tempDir(), 'g');
  await quantize(MHA, g, { ...BASE, method: 'gptq', calib: SAMPLE_TEXT, calibSamples: 2, mix: 'k-quant-m' });
  const bits = [...moduleBytes(await readOnnxInitializers(join(g, 'model.onnx')))].filter(([, e]) => e.bits === 8).map(([m]) => m);
  assert.deepEqual(bits.sort(), ['model.layers.1.mlp.down_proj', 'model.layers.1.self_attn.v_proj']);
  // 2 layers: k-quant-m raises layer 1's v_proj and down_proj (use_more_bits), edges8 every layer.
  const k = await quantize(MHA, join(tempDir(), 'q'), { ...BASE, mix: 'k-quant-m' });
  assert.deepEqual(k.mix!.raised.sort(), ['model.layers.1.mlp.down_proj', 'model.layers.1.self_attn.v_proj']);
});

test('--mix auto measures every target, stays within --target-bits and spends it on the tensors that gain', async () => {
  const out = join(tempDir(), 'q');
  // Block 16: low 6 bits per weight, high 10; 7 bits buys a quarter of the way.
  const report = await quantize(MHA, out, { ...BASE, mix: 'auto', targetBits: 7, calib: SAMPLE_TEXT, calibSamples: 4 });
  const written = moduleBytes(await readOnnxInitializers(join(out, 'model.onnx')));
  const targets = linearModules(spec());
  const weights = targets.reduce((a, t) => a + t.rows * t.cols, 0);
  const bytes = targets.reduce((a, t) => a + written.get(t.module)!.bytes, 0);
  assert.ok((bytes * 8) / weights <= 7, `${(bytes * 8) / weights} bits per weight`);
  assert.ok(report.mix!.raised.length > 0 && report.mix!.raised.length < targets.length);
  // Nothing more fits: the cheapest remaining raise would exceed the budget.
  const left = Math.floor((7 * weights) / 8) - bytes;
  const extra = (t: (typeof targets)[number]) =>
    matMulNBitsBytes(t.rows, t.cols, { bits: 8, blockSize: 16, symmetric: true }) -
    matMulNBitsBytes(t.rows, t.cols, { bits: 4, blockSize: 16, symmetric: true });
  const rest = targets.filter((t) => !report.mix!.raised.includes(t.module));
  const record = JSON.parse(readFileSync(join(out, 'llmopt.json'), 'utf8')).passes[0].options;
  const helps = rest.filter((t) => record.sensitivity[t.module].low > record.sensitivity[t.module].high);
  assert.ok(
    helps.every((t) => extra(t) > left),
    'a raise that fits and helps was left out',
  );
  for (const t of targets) {
    const s = record.sensitivity[t.module];
    assert.ok(s.low > 0 && s.high >= 0 && s.high < s.low, `${t.module}: int8 ${s.high} below int4 ${s.low}`);
    assert.equal(written.get(t.module)!.bits, report.mix!.raised.includes(t.module) ? 8 : 4);
  }
});

test('a pruned model through every mix: its zeros stay exact zeros in the stored weights', async () => {
  const dir = tempDir();
  await prune(MHA, join(dir, 'p'), { structure: parseSparsity('0.5'), method: 'magnitude' });
  const source = await Checkpoint.open(join(dir, 'p'));
  for (const [mix, symmetric] of [
    ['k-quant-m', true],
    ['auto', false],
  ] as const) {
    const out = join(dir, `q-${mix}`);
    const extra = mix === 'auto' ? { targetBits: 7.5, calib: SAMPLE_TEXT, calibSamples: 2 } : {};
    await quantize(join(dir, 'p'), out, { ...BASE, symmetric, mix, ...extra });
    const inits = new Map((await readOnnxInitializers(join(out, 'model.onnx'))).map((i) => [i.name, i]));
    for (const t of linearModules(spec())) {
      const w = await source.readFloat32(`${t.module}.weight`);
      const bits = inits.has(`${t.module}.weight_Q8`) ? 8 : 4;
      const q = unpackMatMulNBits(
        {
          weight: await inits.get(`${t.module}.weight_Q${bits}`)!.read(),
          scales: new Float32Array((await inits.get(`${t.module}.weight_scales`)!.read()).buffer),
          zeroPoints: symmetric ? null : await inits.get(`${t.module}.weight_zp`)!.read(),
        },
        { bits, blockSize: 16, rows: t.rows, cols: t.cols },
      );
      const d = dequantize(q);
      let zeros = 0;
      for (let i = 0; i < w.length; i++) {
        if (w[i] !== 0) continue;
        zeros++;
        assert.ok(d[i] === 0, `${mix} ${t.module}[${i}]: ${d[i]}`); // +0 or -0 (a negative scale's zero code)
      }
      assert.ok(zeros >= w.length * 0.45, `${t.module}: pruned`);
    }
  }
  await source.close();
});

test('a mix written as GGUF: each tensor has the type the policy gives it and the bytes of that type', async () => {
  for (const mix of ['edges8', 'k-quant-m'] as const) {
    const out = join(tempDir(), 'm.gguf');
    const report = await quantizeGguf(MHA, out, { to: 'q4_0', exclude: [], quantizeEmbeddings: false, fallback: true, method: 'rtn', mix });
    const plain = await quantizeGguf(MHA, join(tempDir(), 'p.gguf'), {
      to: 'q4_0',
      exclude: [],
      quantizeEmbeddings: false,
      fallback: true,
      method: 'rtn',
    });
    const before = new Map(readGgufHeader(plain.output).tensors.map((t) => [t.name, t.type]));
    const raised = new Map(report.mix!.raised.map((r) => /^(\S+): \S+ -> (\S+)$/.exec(r)!.slice(1, 3) as [string, string]));
    assert.ok(raised.size > 0);
    for (const t of readGgufHeader(out).tensors) {
      const numel = t.shape.reduce((a, b) => a * b, 1);
      assert.equal(t.bytes, tensorBytes(t.type, numel), t.name);
      const [rows, cols] = t.shape.length === 2 ? t.shape : [1, t.shape[0]!];
      const layer = /^blk\.(\d+)\./.exec(t.name);
      const shape = { name: t.name, layer: layer ? Number(layer[1]) : null, nLayers: 2, rows: rows!, cols: cols!, arch: 'llama' };
      assert.equal(t.type, ggufMixType(mix, shape, false, before.get(t.name)!), t.name);
      assert.equal(t.type, raised.get(t.name) ?? before.get(t.name), t.name);
    }
  }
});

test('the switched measurement of --mix auto equals the KL of an artifact with only that tensor in int4 (MatMulNBits)', async () => {
  const module = 'model.layers.1.mlp.down_proj';
  const set = loadModelCalibration(SAMPLE_TEXT, MHA, spec(), 2);
  const windows = set.windows.filter((w) => w.length === set.windows[0]!.length);
  const cfg = { bits: 4, blockSize: 16, symmetric: true } as const;
  const target = linearModules(spec()).find((t) => t.module === module)!;
  const hf = await openHfModel(MHA);
  const measured = await measureSensitivity(hf.spec, hf.weights, { path: set.path, windows }, [target], {
    windows: windows.length,
    fakeQuantize: (t, w, level) => dequantize(quantizeRtn(w, t.rows, t.cols, { ...cfg, bits: level === 'low' ? 4 : 8 })),
  });
  await hf.close();
  // The independent path: quantize writes the one tensor as MatMulNBits, onnxruntime runs both artifacts.
  const others = linearModules(spec())
    .filter((t) => t.module !== module)
    .map((t) => t.module);
  const out = join(tempDir(), 'one');
  await quantize(MHA, out, { ...BASE, exclude: others });
  const [float, one] = [await openModel(await exportedArtifact(MHA, 'fused'), { device: 'cpu' }), await openModel(out, { device: 'cpu' })];
  const [p, q] = [await forwardOnce(float, windows), await forwardOnce(one, windows)];
  let sum = 0;
  for (let b = 0; b < windows.length; b++)
    for (let t = 0; t < windows[b]!.length; t++) sum += klDivergence(logSoftmax(p.at(b, t)), logSoftmax(q.at(b, t)));
  const kl = sum / (windows.length * windows[0]!.length);
  await float.release();
  await one.release();
  assert.ok(kl > 0);
  assert.ok(Math.abs(measured.get(module)!.low - kl) <= 1e-4 * kl, `switched ${measured.get(module)!.low}, artifact ${kl}`);
});

test("--mix auto written as GGUF: the raised tensors are Q8_0, the rest llama.cpp's types, within the budget", async () => {
  const gguf = { to: 'q4_0', exclude: [], quantizeEmbeddings: false, fallback: true, method: 'rtn' } as const;
  const plain = readGgufHeader((await quantizeGguf(MHA, join(tempDir(), 'p.gguf'), gguf)).output).tensors;
  const out = join(tempDir(), 'm.gguf');
  const report = await quantizeGguf(MHA, out, { ...gguf, mix: 'auto', targetBits: 5.5, calib: SAMPLE_TEXT, calibSamples: 2 });
  const raised = new Set(report.mix!.raised.map((r) => r.split(':')[0]!));
  assert.ok(raised.size > 0);
  let bytes = 0;
  let weights = 0;
  for (const t of readGgufHeader(out).tensors) {
    const before = plain.find((p) => p.name === t.name)!;
    assert.equal(t.type, raised.has(t.name) ? 'Q8_0' : before.type, t.name);
    // The candidates: one linear module each, below Q8_0 at llama.cpp's choice (ffn_down, rows of 80, is F16).
    if (/^blk\.\d+\.(attn_[qkv]|attn_output|ffn_gate|ffn_up)\.weight$/.test(t.name)) {
      bytes += t.bytes;
      weights += t.shape[0]! * t.shape[1]!;
    }
  }
  assert.ok((bytes * 8) / weights <= 5.5, `${(bytes * 8) / weights}`);
  assert.equal(report.mix!.bitsPerWeight, (bytes * 8) / weights);
});
