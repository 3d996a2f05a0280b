// The distillation loop on the fixtures: the N:M pattern survives bit for bit, a seed reproduces a run,
// an interrupted run resumes exactly, a shallow student learns, and bad input is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, MHA, SAMPLE_TEXT, runCli, tempDir } from '../support.js';
import { distill, type DistillOptions } from '../../src/passes/distill/distill.js';
import { prune, parseSparsity } from '../../src/passes/prune/prune.js';
import { Checkpoint } from '../../src/formats/safetensors.js';

const base = {
  teacher: MHA,
  data: SAMPLE_TEXT,
  steps: 6,
  batch: 2,
  seqLen: 16,
  lr: 1e-3,
  temperature: 2,
  alpha: 0.1,
  seed: 3,
  keepSparsity: false,
  device: 'cpu' as const,
};

async function weightsOf(dir: string): Promise<Map<string, Uint8Array>> {
  const c = await Checkpoint.open(dir);
  const out = new Map<string, Uint8Array>();
  for (const n of c.names()) out.set(n, await c.readRaw(n));
  await c.close();
  return out;
}

test('--keep-sparsity: every pruned weight is still exactly zero, the 2:4 pattern bit for bit', async () => {
  const dir = tempDir();
  await prune(MHA, join(dir, 'p'), { structure: parseSparsity('2:4'), method: 'magnitude' });
  const r = await distill(join(dir, 'd'), { ...base, student: join(dir, 'p'), keepSparsity: true });
  assert.equal(r.sparsityKept, true);
  const before = await weightsOf(join(dir, 'p'));
  const after = await weightsOf(join(dir, 'd'));
  let changed = 0;
  for (const [name, bytes] of before) {
    if (!/_proj\.weight$/.test(name)) continue;
    const a = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const b = new Float32Array(after.get(name)!.buffer, after.get(name)!.byteOffset, a.length);
    for (let i = 0; i < a.length; i++) {
      assert.equal(a[i] === 0, b[i] === 0, `${name}[${i}]: zero pattern changed`);
      if (a[i] !== b[i]) changed++;
    }
  }
  assert.ok(changed > 0, 'training changed the kept weights');
  assert.ok(
    readFileSync(join(dir, 'd', 'train-log.jsonl'), 'utf8')
      .trim()
      .split('\n').length === 6,
  );
});

test('a seed reproduces a run; an interrupted run resumes to the same weights', async () => {
  const dir = tempDir();
  const opts: DistillOptions = { ...base, studentLayers: 1 };
  await distill(join(dir, 'a'), opts);
  await distill(join(dir, 'b'), opts);
  const a = await weightsOf(join(dir, 'a'));
  assert.deepEqual(await weightsOf(join(dir, 'b')), a);

  const abort = new AbortController();
  const stopped = await distill(join(dir, 'c'), {
    ...opts,
    checkpointDir: join(dir, 'ckpt'),
    signal: abort.signal,
    onStep: (s) => s.step === 3 && abort.abort(),
  });
  assert.equal(stopped.stoppedEarly, 'interrupted');
  assert.equal(stopped.steps, 3);
  const resumed = await distill(join(dir, 'c'), { ...opts, checkpointDir: join(dir, 'ckpt'), resume: true });
  assert.equal(resumed.steps, 6);
  assert.deepEqual(await weightsOf(join(dir, 'c')), a);
});

test('a shallow student (1 of 2 layers) gets closer to its teacher', async () => {
  const r = await distill(join(tempDir(), 's'), { ...base, studentLayers: 1, steps: 30, lr: 3e-3, evalData: SAMPLE_TEXT });
  assert.deepEqual(r.layerIds, [1]);
  console.log(
    `# shallow student: KL ${r.before!.kl.toFixed(4)} -> ${r.after!.kl.toFixed(4)}, perplexity ${r.before!.perplexity.toFixed(2)} -> ${r.after!.perplexity.toFixed(2)}`,
  );
  assert.ok(r.after!.kl < r.before!.kl * 0.9);
});

test('a bfloat16 teacher: the student keeps bf16 tensors and evaluates through float32', async () => {
  const out = join(tempDir(), 'g');
  const r = await distill(out, { ...base, teacher: GQA, studentLayers: 2, steps: 3, evalData: SAMPLE_TEXT });
  assert.ok(r.before!.kl > 0 && Number.isFinite(r.after!.kl));
  const c = await Checkpoint.open(out);
  assert.equal(c.info('model.layers.1.mlp.up_proj.weight').dtype, 'BF16');
  await c.close();
});

test('--hidden-loss: a shallow student is matched to its teacher layers and the hidden MSE falls', async () => {
  const out = join(tempDir(), 'h');
  await distill(out, { ...base, studentLayers: 1, steps: 12, lr: 3e-3, hiddenLoss: 1 });
  const log = readFileSync(join(out, 'train-log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.ok(log.every((e) => typeof e.hiddenMse === 'number'));
  assert.ok(log[log.length - 1].hiddenMse < log[0].hiddenMse, `${log[0].hiddenMse} -> ${log[log.length - 1].hiddenMse}`);
});

test('bad input: different vocabularies, empty data, short sequences, bad numbers, missing student; a diverging loss stops', () => {
  const dir = tempDir();
  const other = join(dir, 'other');
  assert.equal(
    runCli(['synth', '--hidden', '64', '--layers', '1', '--heads', '4', '--kv-heads', '4', '--vocab', '400', '-o', other]).code,
    0,
  );
  const fails = (args: string[], message: RegExp, code = 2) => {
    const r = runCli([
      'distill',
      '--teacher',
      MHA,
      '--data',
      SAMPLE_TEXT,
      '--steps',
      '2',
      '--batch',
      '2',
      '--seq-len',
      '8',
      '-o',
      join(dir, 'out'),
      ...args,
    ]);
    assert.equal(r.code, code, r.stderr);
    assert.match(r.stderr, message);
  };
  fails(['--student', other], /student vocabulary 400 differs from the teacher's 320/);
  const empty = join(dir, 'empty.txt');
  writeFileSync(empty, '\n');
  fails(['--student-layers', '1', '--data', empty], /empty\.txt: no text/);
  fails(['--student-layers', '1', '--seq-len', '1'], /--seq-len 1: expected an integer >= 2/);
  fails(['--student-layers', '1', '--lr', '0'], /--lr 0: expected a number/);
  fails(['--student-layers', '1', '--steps', '0'], /--steps 0: expected an integer >= 1/);
  fails([], /give --student <folder> or --student-layers N/);
  fails(['--student-layers', '3'], /--student-layers 3: choose 1 to 2/);
  fails(
    ['--student-layers', '1', '--steps', '4', '--lr', '1e30', '--clip-norm', '0'],
    /the loss is (NaN|Infinity|-Infinity); training stopped/,
    1,
  );
});
