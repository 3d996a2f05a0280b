// Quantized and pruned Qwen3 and Phi-3 (../shared/models/qwen3-tiny, phi3-tiny) through the CLI: each variant exports, runs and
// evaluates against the float checkpoint, and inspect names the architecture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DREAMS_EVAL, DREAMS_TRAIN, needsSharedModel, runCli, sharedModel, tempDir } from '../support.js';
import { Checkpoint } from '../../src/formats/safetensors.js';

const QWEN3 = sharedModel('qwen3-tiny');

function ok(args: string[]): string {
  const r = runCli(args);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

function klAgainstFloat(artifact: string): number {
  const r = JSON.parse(ok(['eval', artifact, '--data', DREAMS_EVAL, '--reference', QWEN3, '--limit', '8', '--threads', '2', '--json']));
  return r.reference.kl;
}

test('qwen3-tiny: int4, int8 and 2:4-pruned variants export and evaluate', { skip: needsSharedModel('qwen3-tiny') }, () => {
  const dir = tempDir();
  const kl: Record<string, number> = {};
  for (const to of ['int4', 'int8']) {
    ok(['quantize', QWEN3, '--to', to, '-o', join(dir, to), '-q']);
    kl[to] = klAgainstFloat(join(dir, to));
  }
  ok(['prune', QWEN3, '--sparsity', '2:4', '-o', join(dir, 'pruned'), '-q']);
  ok(['export', join(dir, 'pruned'), '-o', join(dir, 'pruned-onnx'), '-q']);
  kl['2:4'] = klAgainstFloat(join(dir, 'pruned-onnx'));
  console.log(`# qwen3-tiny KL against float (8 documents): ${JSON.stringify(kl)}`);
  assert.ok(kl.int8! > 0 && kl.int8! < 1e-3, `int8 KL ${kl.int8}`);
  assert.ok(kl.int4! > kl.int8! && kl.int4! < 0.1, `int4 KL ${kl.int4}`);
  assert.ok(kl['2:4']! > 0 && kl['2:4']! < 1, `2:4 KL ${kl['2:4']}`);
  assert.match(ok(['inspect', join(dir, 'int4')]), /architecture\s+qwen3: 3 layers/);
  assert.match(ok(['inspect', join(dir, 'pruned')]), /architecture\s+qwen3: 3 layers/);
});

const PHI3 = sharedModel('phi3-tiny');

/** KL, top-1 agreement and perplexity of an artifact against phi3-tiny in float, on the whole of dreams-eval.txt. */
function phi3Figures(artifact: string): { kl: number; top1: number; perplexity: number } {
  const r = JSON.parse(ok(['eval', artifact, '--data', DREAMS_EVAL, '--reference', PHI3, '--threads', '2', '--json']));
  return { kl: r.reference.kl, top1: r.reference.top1, perplexity: r.perplexity };
}

/** Tensor names and shapes of a safetensors folder. */
async function tensorShapes(dir: string): Promise<Map<string, number[]>> {
  const ckpt = await Checkpoint.open(dir);
  const out = new Map(ckpt.names().map((n) => [n, ckpt.info(n).shape]));
  await ckpt.close();
  return out;
}

test('phi3-tiny: int4, int8, compressed-tensors and 2:4-pruned variants keep the fused layout and evaluate', {
  skip: needsSharedModel('phi3-tiny'),
}, async () => {
  const dir = tempDir();
  const figures: Record<string, { kl: number; top1: number; perplexity: number }> = {};
  ok(['export', PHI3, '-o', join(dir, 'float'), '-q']);
  figures.float = phi3Figures(join(dir, 'float'));
  for (const to of ['int4', 'int8']) {
    ok(['quantize', PHI3, '--to', to, '-o', join(dir, to), '-q']);
    figures[to] = phi3Figures(join(dir, to));
  }
  // Calibrated passes read the parts through the same view (block graphs built from q/k/v/gate/up).
  const calib = ['--calib', DREAMS_TRAIN, '--calib-samples', '8'];
  ok(['quantize', PHI3, '--to', 'int4', '--method', 'gptq', ...calib, '-o', join(dir, 'gptq'), '-q']);
  figures['int4 gptq'] = phi3Figures(join(dir, 'gptq'));
  ok(['prune', PHI3, '--sparsity', '2:4', '--method', 'wanda', ...calib, '-o', join(dir, 'wanda'), '-q']);
  ok(['export', join(dir, 'wanda'), '-o', join(dir, 'wanda-onnx'), '-q']);
  figures['2:4 wanda'] = phi3Figures(join(dir, 'wanda-onnx'));
  // prune and compressed-tensors write a Hugging Face folder: fused again, the source's names and shapes.
  const source = await tensorShapes(PHI3);
  assert.ok(source.has('model.layers.0.self_attn.qkv_proj.weight') && source.has('model.layers.0.mlp.gate_up_proj.weight'));
  ok(['prune', PHI3, '--sparsity', '2:4', '-o', join(dir, 'pruned'), '-q']);
  assert.deepEqual(await tensorShapes(join(dir, 'pruned')), source);
  // 2:4 along the input dim of every part, so of every row of the fused tensor.
  const pruned = await Checkpoint.open(join(dir, 'pruned'));
  const qkv = await pruned.readFloat32('model.layers.1.self_attn.qkv_proj.weight');
  await pruned.close();
  for (let g = 0; g < qkv.length; g += 4) assert.ok(qkv.subarray(g, g + 4).filter((x) => x === 0).length >= 2, `group ${g / 4}`);
  ok(['export', join(dir, 'pruned'), '-o', join(dir, 'pruned-onnx'), '-q']);
  figures['2:4'] = phi3Figures(join(dir, 'pruned-onnx'));
  // intermediate_size 304 is a multiple of 16, not of the default 32.
  // Groups of 16: vLLM serves them with Exllama, at float16 only.
  ok([
    'quantize',
    PHI3,
    '--to',
    'int4',
    '--block-size',
    '16',
    '--format',
    'compressed-tensors',
    '--serve-dtype',
    'float16',
    '-o',
    join(dir, 'ct'),
    '-q',
  ]);
  const ct = await tensorShapes(join(dir, 'ct'));
  assert.deepEqual(ct.get('model.layers.0.self_attn.qkv_proj.weight_shape'), [2]);
  assert.ok(!ct.has('model.layers.0.self_attn.q_proj.weight_packed'), 'q/k/v are stored fused');
  ok(['export', join(dir, 'ct'), '-o', join(dir, 'ct-onnx'), '-q']);
  figures['int4 compressed-tensors'] = phi3Figures(join(dir, 'ct-onnx'));
  console.log(`# phi3-tiny against float on dreams-eval.txt: ${JSON.stringify(figures)}`);
  assert.ok(figures.float!.kl < 1e-9 && figures.float!.top1 === 1, `float KL ${figures.float!.kl}`);
  assert.ok(figures.int8!.kl > 0 && figures.int8!.kl < 1e-3, `int8 KL ${figures.int8!.kl}`);
  assert.ok(figures.int4!.kl > figures.int8!.kl && figures.int4!.kl < 0.5, `int4 KL ${figures.int4!.kl}`);
  // Blocks of 16 against the ONNX int4's 32: a little closer to float, far from int8.
  const ctKl = figures['int4 compressed-tensors']!.kl;
  assert.ok(ctKl > 10 * figures.int8!.kl && ctKl < figures.int4!.kl, JSON.stringify(figures));
  assert.ok(figures['2:4']!.kl > 0 && figures['2:4']!.kl < 1, `2:4 KL ${figures['2:4']!.kl}`);
  assert.ok(figures['int4 gptq']!.kl < figures.int4!.kl, 'GPTQ beats RTN');
  assert.ok(figures['2:4 wanda']!.kl < figures['2:4']!.kl, 'Wanda beats magnitude');
  assert.match(ok(['inspect', join(dir, 'pruned')]), /architecture\s+phi3: 3 layers/);
});
