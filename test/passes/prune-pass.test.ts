// The prune pass end to end: the Hugging Face folder it writes (names, dtypes, shards, exact zeros,
// N:M compliance, config section), and quality figures on aidreams-260k against ../shared/README.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AIDREAMS, DREAMS_EVAL, GQA, MHA, NEEDS_SHARED, SAMPLE_TEXT, SHARED, tempDir } from '../support.js';
import { prune, parseSparsity, type PruneOptions } from '../../src/passes/prune/prune.js';
import { compareModels } from '../../src/eval/compare.js';
import { Checkpoint } from '../../src/formats/safetensors.js';
import { inspectModel } from '../../src/model/inspect.js';
import { countNmViolations } from '../../src/model/sparsity.js';
import { exportModel } from '../../src/passes/export.js';
import { quantize } from '../../src/passes/quantize/quantize.js';

const DREAMS_TRAIN = join(SHARED, 'data', 'dreams-train.txt');

test('2:4 on the bf16 sharded fixture: same names, dtypes and shards; every group has 2 zeros; config section', async () => {
  for (const method of ['magnitude', 'wanda', 'sparsegpt'] as const) {
    const out = join(tempDir(), 'p');
    const report = await prune(GQA, out, { structure: parseSparsity('2:4'), method, calib: SAMPLE_TEXT, calibSamples: 4 });
    assert.ok(report.tensors.every((t) => t.nmViolations === 0));
    assert.equal(report.targets, 21);
    const src = await Checkpoint.open(GQA);
    const dst = await Checkpoint.open(out);
    assert.deepEqual(dst.names().sort(), src.names().sort());
    for (const name of src.names()) {
      assert.equal(dst.info(name).dtype, src.info(name).dtype, name);
      assert.deepEqual(dst.info(name).shape, src.info(name).shape, name);
      if (/\.(q|k|v|o|gate|up|down)_proj\.weight$/.test(name)) {
        const [rows, cols] = dst.info(name).shape as [number, number];
        assert.equal(countNmViolations(await dst.readFloat32(name), rows, cols, 2, 4), 0, name);
      } else assert.deepEqual(await dst.readRaw(name), await src.readRaw(name), `${name} copied unchanged`);
    }
    await src.close();
    await dst.close();
    assert.ok(existsSync(join(out, 'model.safetensors.index.json')));
    assert.ok(existsSync(join(out, 'tokenizer.json')));
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    assert.equal(cfg.llmopt_pruning.structure, '2:4');
    assert.equal(cfg.llmopt_pruning.method, method);
    assert.ok(Math.abs(cfg.llmopt_pruning.sparsity - 0.5) < 1e-9);
    const inspected = await inspectModel(out);
    assert.equal(inspected.nm!.compliant, 21);
  }
});

test('50% unstructured: each row loses round(0.5 * in_features) weights, for every method', async () => {
  for (const method of ['magnitude', 'wanda', 'sparsegpt'] as const) {
    const out = join(tempDir(), 'p');
    await prune(MHA, out, { structure: parseSparsity('0.5'), method, calib: SAMPLE_TEXT, calibSamples: 4 });
    const ckpt = await Checkpoint.open(out);
    const name = 'model.layers.1.mlp.down_proj.weight';
    const [rows, cols] = ckpt.info(name).shape as [number, number];
    const w = await ckpt.readFloat32(name);
    for (let r = 0; r < rows; r++) {
      let zeros = 0;
      for (let c = 0; c < cols; c++) if (w[r * cols + c] === 0) zeros++;
      assert.ok(Math.abs(zeros - Math.round(0.5 * cols)) <= 1, `${method} row ${r}: ${zeros} zeros`);
    }
    await ckpt.close();
  }
});

test('a pruned folder feeds export and quantize unchanged', async () => {
  const dir = tempDir();
  await prune(MHA, join(dir, 'p'), { structure: parseSparsity('2:4'), method: 'magnitude' });
  await exportModel(join(dir, 'p'), join(dir, 'onnx'), { attention: 'fused', layout: 'llmopt' });
  await quantize(join(dir, 'p'), join(dir, 'q'), {
    to: 'int4',
    method: 'rtn',
    blockSize: 16,
    symmetric: true,
    accuracyLevel: 0,
    exclude: [],
    quantizeEmbeddings: false,
    format: 'onnx',
    attention: 'fused',
  });
  const manifest = JSON.parse(readFileSync(join(dir, 'q', 'llmopt.json'), 'utf8'));
  assert.deepEqual(
    manifest.passes.map((p: { pass: string }) => p.pass),
    ['prune', 'quantize', 'export'],
  );
});

async function quality(structure: string, method: PruneOptions['method'], extra: Partial<PruneOptions> = {}) {
  const out = join(tempDir(), 'p');
  await prune(AIDREAMS, out, { structure: parseSparsity(structure), method, calib: DREAMS_TRAIN, calibSamples: 32, ...extra });
  const r = await compareModels(out, AIDREAMS, DREAMS_EVAL);
  return { kl: r.reference!.kl, top1: r.reference!.top1, ppl: r.perplexity };
}

test('aidreams-260k: magnitude and dense-calibrated Wanda reproduce the independent figures', { skip: NEEDS_SHARED }, async () => {
  const mag24 = await quality('2:4', 'magnitude');
  const mag50 = await quality('0.5', 'magnitude');
  const wanda24 = await quality('2:4', 'wanda', { sequential: false });
  console.log(
    `# 2:4 magnitude KL ${mag24.kl.toFixed(3)} top-1 ${mag24.top1.toFixed(3)} ppl ${mag24.ppl.toFixed(2)}; 50% magnitude KL ${mag50.kl.toFixed(3)}; 2:4 wanda (dense calibration) KL ${wanda24.kl.toFixed(3)} ppl ${wanda24.ppl.toFixed(2)}`,
  );
  // ../shared/README.md: 1.020 / 0.443 / 13.49; 0.420 / 0.657 / 7.19; 1.010 / 0.469 / 13.04.
  assert.ok(Math.abs(mag24.kl - 1.02) < 0.001 && Math.abs(mag24.top1 - 0.443) < 0.001 && Math.abs(mag24.ppl - 13.49) < 0.01);
  assert.ok(Math.abs(mag50.kl - 0.42) < 0.001 && Math.abs(mag50.top1 - 0.657) < 0.001 && Math.abs(mag50.ppl - 7.19) < 0.01);
  assert.ok(Math.abs(wanda24.kl - 1.01) < 0.001 && Math.abs(wanda24.top1 - 0.469) < 0.001 && Math.abs(wanda24.ppl - 13.04) < 0.01);
});

test('aidreams-260k: Wanda and SparseGPT beat magnitude at 2:4', { skip: NEEDS_SHARED }, async () => {
  const mag = await quality('2:4', 'magnitude');
  const wanda = await quality('2:4', 'wanda');
  const sgpt = await quality('2:4', 'sparsegpt');
  console.log(`# 2:4 KL: magnitude ${mag.kl.toFixed(3)}, wanda ${wanda.kl.toFixed(3)}, sparsegpt ${sgpt.kl.toFixed(3)}`);
  assert.ok(wanda.kl < mag.kl && wanda.ppl < mag.ppl);
  assert.ok(sgpt.kl < wanda.kl && sgpt.ppl < wanda.ppl);
});
