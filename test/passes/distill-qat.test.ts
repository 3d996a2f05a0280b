// Quantization-aware distillation (distill --quantize-aware): the student is trained through quantize's own rounding,
// the folder holds weights quantize reproduces code for code, and on aidreams-260k symmetric int4 gets below the
// issue's KL goal of 0.010 that no post-training method here reaches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AIDREAMS, DREAMS_EVAL, DREAMS_TRAIN, GQA, MHA, NEEDS_SHARED, SAMPLE_TEXT, runCli, tempDir } from '../support.js';
import { distill } from '../../src/passes/distill/distill.js';
import { quantize, type QuantizeOptions } from '../../src/passes/quantize/quantize.js';
import { quantizeGguf } from '../../src/passes/quantize/gguf.js';
import { quantizeRtn } from '../../src/passes/quantize/blockwise.js';
import { dequantize } from '../../src/core/block-quant.js';
import { prune, parseSparsity } from '../../src/passes/prune/prune.js';
import { Checkpoint } from '../../src/formats/safetensors.js';
import { readJsonFile } from '../../src/formats/hf-config.js';
import { evaluate } from '../../src/eval/evaluate.js';
import { loadEvalWindows } from '../../src/eval/dataset.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { exportModel } from '../../src/passes/export.js';

// quantize --to int4 as the CLI resolves it for the CPU (8-bit embedding and lm_head), at accuracy level 0.
const int4: QuantizeOptions = {
  to: 'int4',
  method: 'rtn',
  blockSize: 32,
  symmetric: true,
  accuracyLevel: 0,
  exclude: [],
  quantizeEmbeddings: true,
  embeddingBits: 8,
  format: 'onnx',
  attention: 'fused',
};
const small = {
  data: SAMPLE_TEXT,
  steps: 4,
  batch: 2,
  seqLen: 16,
  lr: 1e-2,
  temperature: 1,
  alpha: 0,
  seed: 1,
  keepSparsity: false,
  device: 'cpu' as const,
};

/** Every tensor of a folder as float32 (the student is written in float32). */
async function floats(dir: string): Promise<Map<string, { shape: number[]; values: Float32Array }>> {
  const c = await Checkpoint.open(dir);
  const out = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const n of c.names()) {
    assert.equal(c.info(n).dtype, 'F32', `${n} is written in float32`);
    out.set(n, { shape: c.info(n).shape, values: await c.readFloat32(n) });
  }
  await c.close();
  return out;
}

/**
 * Whether quantizing a tensor on this grid gives back its values: bit for bit when symmetric (the scale is the extreme
 * over -2^(bits-1), exact in binary); asymmetric, the scale (max - min) / levels may move by an ulp, so the same codes
 * are checked as values within 1e-6 relative (one code apart is at least 1/255 of the block's range).
 */
function onGrid(values: Float32Array, shape: number[], bits: 4 | 8, blockSize: number, symmetric: boolean): boolean {
  const back = dequantize(quantizeRtn(values, shape[0]!, shape[1]!, { bits, blockSize, symmetric }));
  return back.every((v, i) => (symmetric ? v === values[i] : Math.abs(v - values[i]!) <= 1e-6 * Math.abs(values[i]!)));
}

test('--quantize-aware int4: the folder is quantize --to int4 rounding, code for code, and training moved codes', async () => {
  // The GQA fixture: bfloat16 (written back in float32), an untied lm_head, hidden 48 (a ragged second block of 32).
  const dir = tempDir();
  const r = await distill(join(dir, 'q'), { ...small, teacher: GQA, quantizeAware: 'int4', qatBlockSize: 32 });
  assert.deepEqual(r.quantizeAware, { to: 'int4', blockSize: 32, symmetric: true, embeddingBits: 8 });
  const trained = await floats(join(dir, 'q'));
  const start = await Checkpoint.open(GQA);
  let moved = 0;
  let projections = 0;
  for (const [name, t] of trained) {
    if (t.shape.length !== 2) continue;
    const bits = /_proj\.weight$/.test(name) ? 4 : 8;
    if (bits === 4) projections++;
    assert.ok(onGrid(t.values, t.shape, bits, 32, true), `${name}: on the ${bits}-bit grid`);
    // Training changed the model itself, not only its rounding: some codes differ from RTN of the starting weights.
    const rtn = dequantize(quantizeRtn(await start.readFloat32(name), t.shape[0]!, t.shape[1]!, { bits, blockSize: 32, symmetric: true }));
    moved += rtn.filter((v, i) => v !== t.values[i]).length;
  }
  await start.close();
  assert.equal(projections, 7 * (readJsonFile(join(GQA, 'config.json')).num_hidden_layers as number), 'every projection of every layer');
  assert.ok(moved > 0);
  const config = readJsonFile(join(dir, 'q', 'config.json')) as { torch_dtype: string; llmopt_distill: { quantizeAware: unknown } };
  assert.equal(config.torch_dtype, 'float32');
  assert.deepEqual(config.llmopt_distill.quantizeAware, r.quantizeAware);

  // quantize with the scheme it was trained for: no warning; another block size: a warning naming it.
  const same = await quantize(join(dir, 'q'), join(dir, 'int4'), int4);
  assert.deepEqual(same.warnings, []);
  const other = await quantize(join(dir, 'q'), join(dir, 'int4-64'), { ...int4, blockSize: 64 });
  assert.equal(other.warnings.length, 1);
  assert.match(other.warnings[0]!, /trained quantization-aware for `quantize --to int4`; --block-size 64 rounds it differently/);
});

test('--quantize-aware int8 (zero points, as quantize writes int8 by default) on a 2:4-pruned student: zeros stay zero, float embeddings', async () => {
  const dir = tempDir();
  await prune(MHA, join(dir, 'p'), { structure: parseSparsity('2:4'), method: 'magnitude' });
  const r = await distill(join(dir, 'q'), {
    ...small,
    teacher: MHA,
    student: join(dir, 'p'),
    keepSparsity: true,
    quantizeAware: 'int8',
    qatFloatEmbeddings: true,
    qatBlockSize: 16,
  });
  assert.deepEqual(r.quantizeAware, { to: 'int8', blockSize: 16, symmetric: false, embeddingBits: null });
  assert.equal(r.sparsityKept, true);
  const pruned = await floats(join(dir, 'p'));
  const trained = await floats(join(dir, 'q'));
  for (const [name, t] of trained) {
    if (!/_proj\.weight$/.test(name)) continue;
    assert.ok(onGrid(t.values, t.shape, 8, 16, false), `${name}: on the asymmetric 8-bit grid`);
    const p = pruned.get(name)!.values;
    for (let i = 0; i < p.length; i++) if (p[i] === 0) assert.equal(t.values[i], 0, `${name}[${i}]: pruned, so still 0 after rounding`);
  }
  const emb = trained.get('model.embed_tokens.weight')!;
  assert.ok(!onGrid(emb.values, emb.shape, 8, 16, false), 'the embedding stays float');
  const cli = runCli(['quantize', join(dir, 'q'), '--to', 'int8', '--block-size', '16', '--float-embeddings', '-o', join(dir, 'i8')]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.doesNotMatch(cli.stdout, /quantization-aware/);
  // GGUF's types are another grid: written, with a warning.
  const gguf = await quantizeGguf(join(dir, 'q'), join(dir, 'm.gguf'), {
    to: 'q8_0',
    exclude: [],
    quantizeEmbeddings: false,
    fallback: true,
    method: 'rtn',
  });
  assert.deepEqual(gguf.warnings, [
    `${join(dir, 'q')}: trained quantization-aware for \`quantize --to int8 --block-size 16 --float-embeddings\`; GGUF q8_0 rounds it on ` +
      "llama.cpp's grid instead, which undoes part of what the training won back",
  ]);
});

test('bad input: --qat-* without --quantize-aware, a block size MatMulNBits has not, --qat-asymmetric at int8', () => {
  const dir = tempDir();
  const fails = (args: string[], message: RegExp) => {
    const out = join(dir, 'out');
    const r = runCli([
      'distill',
      '--teacher',
      MHA,
      '--data',
      SAMPLE_TEXT,
      '--steps',
      '1',
      '--batch',
      '1',
      '--seq-len',
      '8',
      '-o',
      out,
      ...args,
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.equal(existsSync(out), false, 'nothing written');
  };
  fails(['--student-layers', '1', '--qat-asymmetric'], /--qat-asymmetric: a --quantize-aware option; add --quantize-aware int4 or int8/);
  fails(['--quantize-aware', 'int4', '--qat-block-size', '48'], /--qat-block-size 48: choose one of 16, 32, 64, 128/);
  fails(['--quantize-aware', 'int8', '--qat-asymmetric'], /--qat-asymmetric: int8's blocks take zero points already/);
  fails(['--quantize-aware', 'int3'], /--quantize-aware/);
});

test('aidreams-260k: symmetric int4 trained quantization-aware reaches KL < 0.010 from round-to-nearest 0.0252', {
  skip: NEEDS_SHARED,
}, async () => {
  const dir = tempDir();
  const r = await distill(join(dir, 'q'), {
    teacher: AIDREAMS,
    data: DREAMS_TRAIN,
    evalData: DREAMS_EVAL,
    quantizeAware: 'int4',
    qatFloatEmbeddings: true,
    steps: 100,
    batch: 16,
    lr: 1e-4,
    temperature: 1,
    alpha: 0,
    seed: 0,
    keepSparsity: false,
    device: 'cpu',
  });
  // Before training the student is exactly quantize's RTN (README: symmetric RTN 0.02517).
  assert.ok(Math.abs(r.before!.kl - 0.025169) < 2e-5, `before: KL ${r.before!.kl}`);
  // Measured 0.00733 (README "Quantization-aware distillation"); the figure held with a tolerance.
  assert.ok(r.after!.kl < 0.0085, `after: KL ${r.after!.kl}`);
  // The folder quantized as it was trained is the model measured.
  await quantize(join(dir, 'q'), join(dir, 'int4'), { ...int4, quantizeEmbeddings: false });
  await exportModel(AIDREAMS, join(dir, 'ref'), { attention: 'fused', layout: 'llmopt' });
  const model = await DecoderModel.open(join(dir, 'int4'), { device: 'cpu', threads: 2 });
  const reference = await DecoderModel.open(join(dir, 'ref'), { device: 'cpu', threads: 2 });
  try {
    const windows = loadEvalWindows(DREAMS_EVAL, loadTokenizer(AIDREAMS), 128);
    const e = await evaluate(model, windows, reference, { batchSize: 8 });
    assert.ok(Math.abs(e.reference!.kl - r.after!.kl) < 1e-6, `quantized ${e.reference!.kl} against trained ${r.after!.kl}`);
  } finally {
    await model.release();
    await reference.release();
  }
});
