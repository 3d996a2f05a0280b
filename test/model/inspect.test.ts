// Tests of model inspection: parameter counts against the spec's formula, per-tensor statistics on a
// hand-made checkpoint, artifact inspection against its Hugging Face source, and dtype byte totals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../src/core/errors.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { Checkpoint, writeSafetensors } from '../../src/formats/safetensors.js';
import { inspectModel, tensorStatistics } from '../../src/model/inspect.js';
import { parameterCount } from '../../src/core/spec.js';
import { AIDREAMS, GQA, MHA, NEEDS_SHARED, exportedArtifact, tempDir } from '../support.js';

test('the mha fixture: parameters equal the spec formula, and the architecture is the config', async () => {
  const r = await inspectModel(MHA);
  const spec = readModelSpec(MHA);
  assert.equal(r.kind, 'huggingface');
  assert.equal(r.parameters, parameterCount(spec));
  assert.deepEqual(r.architecture, {
    name: 'llama',
    layers: 2,
    hidden: 64,
    heads: 4,
    kvHeads: 4,
    headDim: 16,
    intermediate: 80,
    vocab: 320,
    context: 128,
    tied: true,
    ropeScaling: null,
  });
  assert.deepEqual(r.dtypes, { F32: { tensors: r.tensors.length, bytes: r.parameters * 4 } });
  assert.equal(r.bytes, r.parameters * 4);
  assert.equal(r.manifest, undefined);
  const norm = r.tensors.find((t) => t.name === 'model.norm.weight')!;
  assert.deepEqual(norm.shape, [64]);
  assert.ok(norm.min !== null && norm.max !== null && norm.mean !== null && norm.std !== null);
  assert.ok(norm.min <= norm.mean && norm.mean <= norm.max && norm.std >= 0);
});

test('statistics and zero fractions of a hand-made checkpoint are exact', async () => {
  const dir = tempDir();
  copyFileSync(join(MHA, 'config.json'), join(dir, 'config.json'));
  const values: Record<string, Float32Array> = {
    'a.weight': new Float32Array([0, 0, 0, 1, -1, 2, 0, 3]), // 4 of 8 zero
    'b.weight': new Float32Array(6), // zeroed out entirely
    'c.weight': new Float32Array([1000.25, 999.75]), // mean far from the spread: std is still exactly 0.25
    'empty.weight': new Float32Array(0),
  };
  const entries = [
    { name: 'a.weight', dtype: 'F32' as const, shape: [2, 4] },
    { name: 'b.weight', dtype: 'F32' as const, shape: [2, 3] },
    { name: 'c.weight', dtype: 'F32' as const, shape: [2] },
    { name: 'empty.weight', dtype: 'F32' as const, shape: [0, 4] },
    { name: 'ids', dtype: 'I64' as const, shape: [3] },
  ];
  await writeSafetensors(join(dir, 'model.safetensors'), entries, (name) =>
    name === 'ids' ? new Uint8Array(new BigInt64Array([0n, 0n, 7n]).buffer) : new Uint8Array(values[name]!.buffer),
  );
  const r = await inspectModel(dir);
  const t = Object.fromEntries(r.tensors.map((x) => [x.name, x]));
  assert.deepEqual(
    { min: t['a.weight']!.min, max: t['a.weight']!.max, mean: t['a.weight']!.mean, zeroFraction: t['a.weight']!.zeroFraction },
    { min: -1, max: 3, mean: 5 / 8, zeroFraction: 0.5 },
  );
  const mean = 5 / 8;
  const variance = [0, 0, 0, 1, -1, 2, 0, 3].reduce((s, x) => s + (x - mean) ** 2, 0) / 8;
  assert.ok(Math.abs(t['a.weight']!.std! - Math.sqrt(variance)) < 1e-12);
  assert.equal(t['b.weight']!.zeroFraction, 1);
  assert.equal(t['b.weight']!.std, 0);
  assert.equal(t['c.weight']!.std, 0.25);
  assert.deepEqual([t['empty.weight']!.numel, t['empty.weight']!.min, t['empty.weight']!.zeroFraction], [0, null, null]);
  // Integer tensors are counted and sized, without statistics.
  assert.deepEqual([t.ids!.numel, t.ids!.bytes, t.ids!.mean, t.ids!.zeroFraction], [3, 24, null, null]);
  assert.equal(r.parameters, 8 + 6 + 2 + 0 + 3);
  assert.equal(r.zeroFraction, (4 + 6) / (8 + 6 + 2));
  assert.deepEqual(r.dtypes, { F32: { tensors: 4, bytes: 64 }, I64: { tensors: 1, bytes: 24 } });
});

test('tensorStatistics leaves NaN and infinities out of min, max, mean and std', () => {
  const s = tensorStatistics(new Float32Array([NaN, 1, 3, Infinity, 0]));
  assert.deepEqual(s, {
    min: 0,
    max: 3,
    mean: 4 / 3,
    std: Math.sqrt(((4 / 3) ** 2 + (1 / 3) ** 2 + (5 / 3) ** 2) / 3),
    zeros: 1,
    nonFinite: 2,
  });
});

for (const attention of ['fused', 'standard'] as const) {
  test(`an artifact exported with ${attention} attention reports the parameters of its Hugging Face source`, async () => {
    const artifact = await exportedArtifact(MHA, attention);
    const hf = await inspectModel(MHA);
    const r = await inspectModel(artifact);
    assert.equal(r.kind, 'artifact');
    assert.equal(r.parameters, hf.parameters);
    assert.deepEqual(r.architecture, hf.architecture);
    assert.deepEqual(
      r.manifest?.map((p) => p.pass),
      ['export'],
    );
    // The rotary caches and graph constants are listed but are not parameters.
    assert.ok(r.tensors.some((t) => t.name === 'cos_cache') && r.tensors.some((t) => t.name.startsWith('/const/')));
    const listed = r.tensors.filter((t) => t.name !== 'cos_cache' && t.name !== 'sin_cache' && !t.name.startsWith('/'));
    assert.equal(
      listed.reduce((n, t) => n + t.numel, 0),
      hf.parameters,
    );
    assert.ok(r.dtypes.I64!.tensors > 0 && r.dtypes.F32!.bytes >= hf.parameters * 4);
    assert.equal(
      r.bytes,
      Object.values(r.dtypes).reduce((n, d) => n + d.bytes, 0),
    );
    // Same weights, same statistics (the exporter transposes, which keeps every summary).
    const downProj = (x: typeof r) => x.tensors.find((t) => t.name === 'model.layers.1.mlp.down_proj.weight')!;
    for (const k of ['min', 'max', 'zeroFraction'] as const) assert.equal(downProj(r)[k], downProj(hf)[k]);
    assert.ok(Math.abs(downProj(r).mean! - downProj(hf).mean!) < 1e-12);
  });
}

test('the bf16 fixture reports BF16 bytes; its float32 artifact the same parameters', async () => {
  const r = await inspectModel(GQA);
  const ckpt = await Checkpoint.open(GQA);
  const total = ckpt.totalBytes;
  await ckpt.close();
  assert.deepEqual(Object.keys(r.dtypes), ['BF16']);
  assert.equal(r.dtypes.BF16!.bytes, total);
  assert.equal(r.dtypes.BF16!.bytes, r.parameters * 2);
  assert.equal(r.parameters, parameterCount(readModelSpec(GQA)));
  assert.ok(r.architecture.ropeScaling?.type === 'llama3' && r.architecture.kvHeads === 2 && !r.architecture.tied);
  const artifact = await inspectModel(await exportedArtifact(GQA, 'standard'));
  assert.equal(artifact.parameters, r.parameters);
});

test('a missing folder or a folder without a model is an InputError', async () => {
  await assert.rejects(inspectModel(join(tempDir(), 'absent')), InputError);
  await assert.rejects(inspectModel(tempDir()), InputError);
});

test('aidreams-260k: parameters equal the spec formula', { skip: NEEDS_SHARED }, async () => {
  const r = await inspectModel(AIDREAMS);
  assert.equal(r.parameters, parameterCount(readModelSpec(AIDREAMS)));
  assert.equal((await inspectModel(await exportedArtifact(AIDREAMS, 'standard'))).parameters, r.parameters);
});
