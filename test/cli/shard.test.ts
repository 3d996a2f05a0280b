// `llmopt shard` as a user runs it: bad options exit 2 with one line and write nothing; a sharded
// folder runs under generate and eval, and eval --reference against the source reports KL ~0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { Checkpoint, writeSafetensors } from '../../src/formats/safetensors.js';
import { join } from 'node:path';
import { DREAMS_EVAL, GQA, MHA, SAMPLE_TEXT, TINY_MODELS, needsSharedModel, runCli, sharedModel, tempDir } from '../support.js';

test('bad shard options exit 2 with one clear line and leave no output behind', () => {
  const dir = tempDir();
  const cases: Array<[string[], RegExp]> = [
    [[MHA, '--tp', '3'], /--tp 3 does not divide the 4 attention heads/],
    [[GQA, '--tp', '4'], /--tp 4 does not divide the 6 attention heads/],
    [[MHA, '--pp', '3'], /--pp 3 is larger than the model's 2 layers/],
    [[GQA, '--stages', '0-1,1-2'], /stages overlap at layer 1/],
    [[GQA, '--stages', '0-0,2-2'], /layers 1-1 are in no stage/],
    [[GQA, '--stages', '0-1'], /layers 2-2 are in no stage/],
    [[GQA, '--format', 'tensorrt-llm', '--stages', '0-1,2-2'], /--stages does not apply to --format tensorrt-llm/],
    [[GQA, '--attention', 'inplace'], /--attention inplace: choose one of fused, standard/],
  ];
  for (const [args, re] of cases) {
    const out = join(dir, 'out');
    const r = runCli(['shard', ...args, '-o', out]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(!existsSync(out), 'no output folder');
  }
  assert.deepEqual(readdirSync(dir), [], 'no temporary folders left');
});

test('shard --tp 2 --pp 2, then generate and eval --reference (KL ~0) run the sharded folder', () => {
  const out = join(tempDir(), 'm-tp2pp2');
  const s = runCli(['shard', GQA, '--tp', '2', '--pp', '2', '--json', '-o', out]);
  assert.equal(s.code, 0, s.stderr);
  const report = JSON.parse(s.stdout);
  assert.equal(report.worldSize, 4);
  assert.equal(report.ranks.length, 4);
  assert.ok(report.ranks.every((r: { bytes: number }) => r.bytes > 0));
  const g = runCli(['generate', out, '--prompt', 'Once upon', '-n', '5', '--json']);
  assert.equal(g.code, 0, g.stderr);
  assert.equal(JSON.parse(g.stdout).model, 'tp 2 x pp 2, fused attention');
  const e = runCli(['eval', out, '--data', SAMPLE_TEXT, '--reference', GQA, '--max-kl', '1e-6', '--json']);
  assert.equal(e.code, 0, e.stderr);
  const kl = JSON.parse(e.stdout).reference.kl;
  console.log(`# eval --reference on tp 2 x pp 2: KL ${kl}`);
  assert.ok(kl < 1e-6);
  // A device per rank: the same ids on cpu everywhere; a wrong count or an absent provider is exit 2.
  const perRank = runCli(['generate', out, '--prompt', 'Once upon', '-n', '5', '--json', '--rank-devices', 'cpu,cpu,cpu,cpu']);
  assert.equal(perRank.code, 0, perRank.stderr);
  assert.deepEqual(JSON.parse(perRank.stdout).outputs, JSON.parse(g.stdout).outputs);
  const wrong = runCli(['generate', out, '--prompt', 'x', '--rank-devices', 'cpu,cpu']);
  assert.equal(wrong.code, 2);
  assert.match(wrong.stderr, /--rank-devices: 2 devices for 4 ranks/);
  const cuda = runCli(['generate', out, '--prompt', 'x', '--rank-devices', 'cpu,cpu,cpu,cuda']);
  assert.equal(cuda.code, 2);
  assert.match(cuda.stderr, /--device cuda: .*CUDA provider/);
});

for (const name of TINY_MODELS) {
  const source = sharedModel(name);
  test(`${name}: --tp 2 and --tp 2 --pp 2${name === 'smollm3-tiny' ? ' (and its no-rope layer as a stage)' : ''} evaluate with KL ~0`, {
    skip: needsSharedModel(name),
  }, () => {
    // smollm3-tiny's layer 3 has no rotary: --stages 0-2,3 gives it a stage (and a graph) of its own.
    const layouts = [['--tp', '2'], ['--tp', '2', '--pp', '2'], ...(name === 'smollm3-tiny' ? [['--stages', '0-2,3']] : [])];
    for (const layout of layouts) {
      const out = join(tempDir(), 'sharded');
      const s = runCli(['shard', source, ...layout, '-o', out, '-q']);
      assert.equal(s.code, 0, s.stderr);
      const e = runCli(['eval', out, '--data', DREAMS_EVAL, '--limit', '4', '--reference', source, '--max-kl', '1e-6', '--json']);
      assert.equal(e.code, 0, e.stderr);
      console.log(`# ${name} ${layout.join(' ')}: eval --reference KL ${JSON.parse(e.stdout).reference.kl}`);
    }
  });

  // TensorRT-LLM's checkpoint format has no SmolLM3 (layers without rotary); its Phi3Model has no pipeline stages.
  if (name === 'smollm3-tiny' || name === 'phi3-tiny') {
    const arch = name.replace('-tiny', '');
    const refusal =
      arch === 'phi3'
        ? '--format tensorrt-llm writes phi3 at --pp 1 only'
        : `--format tensorrt-llm writes llama, mistral, qwen2, qwen3, phi3, gemma3 and gemma2 checkpoints, not ${arch}; use --format onnx`;
    test(`${name}: --format tensorrt-llm is refused with one line, exit 2, nothing written`, { skip: needsSharedModel(name) }, () => {
      const dir = tempDir();
      const out = join(dir, 'trt');
      const r = runCli(['shard', source, '--tp', '2', '--pp', '2', '--format', 'tensorrt-llm', '-o', out]);
      assert.equal(r.code, 2, r.stderr);
      assert.ok(r.stderr.includes(refusal), r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.deepEqual(readdirSync(dir), [], 'nothing written');
    });
  } else {
    test(`${name}: --format tensorrt-llm writes TensorRT-LLM's QWen checkpoint`, { skip: needsSharedModel(name) }, () => {
      const out = join(tempDir(), 'trt');
      const r = runCli(['shard', source, '--tp', '2', '--pp', '2', '--format', 'tensorrt-llm', '-o', out, '-q']);
      assert.equal(r.code, 0, r.stderr);
      const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
      assert.equal(config.qwen_type, name.replace('-tiny', ''));
      assert.deepEqual(
        readdirSync(out)
          .filter((f) => f.startsWith('rank'))
          .sort(),
        [0, 1, 2, 3].map((k) => `rank${k}.safetensors`),
      );
    });
  }
}

test('--format tensorrt-llm refuses q/k/v biases it cannot hold (k_proj unbiased) in one line', {
  skip: needsSharedModel('qwen2-tiny'),
}, async () => {
  // qwen2-tiny without its k_proj biases: llmopt reads biases per projection, TensorRT-LLM holds one attn_bias flag.
  const dir = tempDir();
  const source = join(dir, 'qwen2-no-k-bias');
  cpSync(sharedModel('qwen2-tiny'), source, { recursive: true });
  const ckpt = await Checkpoint.open(sharedModel('qwen2-tiny'));
  const names = ckpt.names().filter((n) => !n.endsWith('k_proj.bias'));
  const entries = names.map((name) => ({ name, dtype: ckpt.info(name).dtype, shape: ckpt.info(name).shape }));
  await writeSafetensors(join(source, 'model.safetensors'), entries, (name) => ckpt.readRaw(name));
  await ckpt.close();
  const out = join(dir, 'trt');
  const r = runCli(['shard', source, '--tp', '2', '--format', 'tensorrt-llm', '-o', out]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--format tensorrt-llm holds one bias flag for q, k and v; this checkpoint biases only some of them/);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.ok(!existsSync(out));
  // The onnx format shards it.
  assert.equal(runCli(['shard', source, '--tp', '2', '-o', join(dir, 'onnx'), '-q']).code, 0);
});

test('gemma3-tiny: --tp 2 --pp 2 evaluates with KL ~0 (post-block norms on the summed shares)', {
  skip: needsSharedModel('gemma3-tiny'),
}, () => {
  const source = sharedModel('gemma3-tiny');
  const out = join(tempDir(), 'sharded');
  const s = runCli(['shard', source, '--tp', '2', '--pp', '2', '-o', out, '-q']);
  assert.equal(s.code, 0, s.stderr);
  const e = runCli(['eval', out, '--data', DREAMS_EVAL, '--limit', '4', '--reference', source, '--max-kl', '1e-6', '--json']);
  assert.equal(e.code, 0, e.stderr);
  console.log(`# gemma3-tiny --tp 2 --pp 2: eval --reference KL ${JSON.parse(e.stdout).reference.kl}`);
});
