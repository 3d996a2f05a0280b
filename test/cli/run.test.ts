// `llmopt run` as a user runs it: every shipped recipe on a fixture (small settings through --set),
// resuming skips finished stages, --from and --set re-run what they change, a failed gate exits 1, and
// bad input is one line with exit code 2 that leaves an earlier run as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, MHA, runCli, tempDir } from '../support.js';

const SMALL_BENCH = ['--set', 'bench.reps=1', '--set', 'bench.prompt_len=8', '--set', 'bench.gen_len=8'];
const SMALL_DISTILL = (stage: string) => ['--set', `${stage}.steps=8`, '--set', `${stage}.batch=2`, '--set', `${stage}.seq_len=16`];

interface Report {
  stages: Array<{
    dir: string;
    status: string;
    kl: number | null;
    top1: number | null;
    tokensPerSecond: number | null;
    bytes: number | null;
    gates: Array<{ gate: string; passed: boolean }>;
  }>;
  failedGate: { gate: string; value: number } | null;
}

function run(args: string[], code = 0): Report {
  const r = runCli(['run', ...args, '--json']);
  assert.equal(r.code, code, r.stderr);
  assert.equal(code === 0 ? r.stderr : '', '');
  return JSON.parse(r.stdout);
}
const statuses = (r: Report) => r.stages.map((s) => `${s.dir} ${s.status}`);

/** Every file below `dir` with its size and modification time: what "nothing destroyed" compares. */
function snapshot(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((e) => {
    const rel = join(prefix, e.name);
    if (e.isDirectory()) return snapshot(dir, rel);
    const s = statSync(join(dir, rel));
    return [`${rel} ${s.size} ${s.mtimeMs}`];
  });
}

test('quickstart: a finished run is skipped, --from re-runs from a stage, --set re-runs the stage it edits and those after', () => {
  const out = join(tempDir(), 'quick');
  const base = ['-o', out, ...SMALL_DISTILL('distill'), ...SMALL_BENCH];
  const first = run(['quickstart', ...base]);
  assert.deepEqual(statuses(first), ['01-prune ran', '02-distill ran', '03-quantize ran', '04-eval ran', '05-bench ran']);
  for (const f of [
    '01-prune/llmopt.json',
    '02-distill/model.safetensors',
    '03-quantize/model.onnx',
    '04-eval/result.json',
    '05-bench/result.json',
    'report.json',
    'report.md',
    'llmopt-run.json',
  ])
    assert.ok(existsSync(join(out, f)), f);
  const [prune, , quantize, evaluated, bench] = first.stages;
  assert.ok(quantize!.bytes! < prune!.bytes! / 1.5, 'int4 is smaller than the pruned float checkpoint');
  assert.ok(evaluated!.kl! > 0 && evaluated!.top1! > 0 && bench!.tokensPerSecond! > 0);
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /\| 04-eval \| ran \| .* \| max_kl 2: pass, min_top1 0.05: pass \|/);

  const again = run(['quickstart', ...base]);
  assert.deepEqual(statuses(again), [
    '01-prune skipped',
    '02-distill skipped',
    '03-quantize skipped',
    '04-eval skipped',
    '05-bench skipped',
  ]);
  assert.deepEqual(
    again.stages.map((s) => s.kl),
    first.stages.map((s) => s.kl),
    'a skipped stage reports its recorded figures',
  );
  assert.deepEqual(statuses(run(['quickstart', ...base, '--from', 'quantize'])), [
    '01-prune skipped',
    '02-distill skipped',
    '03-quantize ran',
    '04-eval ran',
    '05-bench ran',
  ]);
  assert.deepEqual(statuses(run(['quickstart', ...base, '--set', 'distill.steps=4'])), [
    '01-prune skipped',
    '02-distill ran',
    '03-quantize ran',
    '04-eval ran',
    '05-bench ran',
  ]);
  // A gate is checked again from the recorded figures: editing one re-runs nothing.
  assert.deepEqual(
    statuses(run(['quickstart', ...base, '--set', 'distill.steps=4', '--set', 'eval.gate.max_kl=3'])).filter((s) => s.endsWith('ran')),
    [],
  );
});

test('int8, int4-gptq and sparse24-distill-int4 on the fixture', () => {
  const dir = tempDir();
  const int8 = run(['int8', MHA, '-o', join(dir, 'int8'), ...SMALL_BENCH]);
  assert.ok(int8.stages[1]!.kl! < 0.01, `int8 KL ${int8.stages[1]!.kl}`);
  const gptq = run(['int4-gptq', MHA, '-o', join(dir, 'gptq'), '--set', 'quantize.calib_samples=8', ...SMALL_BENCH]);
  assert.deepEqual(statuses(gptq), ['01-quantize ran', '02-eval ran', '03-bench ran']);
  assert.equal(JSON.parse(readFileSync(join(dir, 'gptq', '01-quantize', 'llmopt.json'), 'utf8')).passes.at(-2).options.method, 'gptq');
  const s24 = run([
    'sparse24-distill-int4',
    MHA,
    '-o',
    join(dir, 's24'),
    '--set',
    'prune.calib_samples=8',
    ...SMALL_DISTILL('distill'),
    ...SMALL_BENCH,
  ]);
  assert.deepEqual(statuses(s24), ['01-prune ran', '02-distill ran', '03-quantize ran', '04-eval ran', '05-bench ran']);
  const passes = JSON.parse(readFileSync(join(dir, 's24', '03-quantize', 'llmopt.json'), 'utf8')).passes.map(
    (p: { pass: string }) => p.pass,
  );
  assert.deepEqual(passes, ['prune', 'distill', 'quantize', 'export'], 'the manifest keeps the chain of passes');
});

test('qat-int4 on the fixture: distilled through int4 rounding, then quantized', () => {
  const dir = tempDir();
  const qat = run(['qat-int4', MHA, '-o', join(dir, 'qat'), ...SMALL_DISTILL('distill'), ...SMALL_BENCH]);
  assert.deepEqual(statuses(qat), ['01-distill ran', '02-quantize ran', '03-eval ran', '04-bench ran']);
  const config = JSON.parse(readFileSync(join(dir, 'qat', '01-distill', 'config.json'), 'utf8'));
  assert.deepEqual(config.llmopt_distill.quantizeAware, { to: 'int4', blockSize: 32, symmetric: true, embeddingBits: 8 });
  const passes = JSON.parse(readFileSync(join(dir, 'qat', '02-quantize', 'llmopt.json'), 'utf8')).passes.map(
    (p: { pass: string }) => p.pass,
  );
  assert.deepEqual(passes, ['distill', 'quantize', 'export']);
});

test('draft-for-speculative and tp2 on the fixtures', () => {
  const dir = tempDir();
  const draft = run([
    'draft-for-speculative',
    MHA,
    '-o',
    join(dir, 'draft'),
    ...SMALL_DISTILL('student'),
    '--set',
    'student.student_layers=1',
    '--set',
    'bench.draft_tokens=2',
    ...SMALL_BENCH,
  ]);
  assert.deepEqual(statuses(draft), ['01-export ran', '02-distill ran', '03-export ran', '04-eval ran', '05-bench ran']);
  const spec = JSON.parse(readFileSync(join(dir, 'draft', '05-bench', 'result.json'), 'utf8')).speculative[0];
  assert.equal(spec.draft, join(dir, 'draft', '03-export'));
  assert.equal(spec.identical, true, 'greedy speculative decoding reproduces the target');
  assert.ok(draft.stages[1]!.bytes! < draft.stages[0]!.bytes!, 'the 1-layer student is smaller');
  const tp2 = run(['tp2', GQA, '-o', join(dir, 'tp2'), ...SMALL_BENCH]);
  assert.ok(tp2.stages[1]!.kl! < 1e-4, `sharded KL ${tp2.stages[1]!.kl}`);
  assert.ok(existsSync(join(dir, 'tp2', '01-shard', 'rank1')));
});

test('a failed gate exits 1 naming the gate and the figure; later stages do not run', () => {
  const out = join(tempDir(), 'gated');
  const r = runCli(['run', 'int8', MHA, '-o', out, '--set', 'eval.gate.max_kl=0', ...SMALL_BENCH]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^llmopt: stage 02-eval: gate max_kl 0 \(measured [0-9.e-]+\) failed\n$/);
  assert.match(r.stdout, /03-bench +not run/);
  const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
  assert.equal(report.failedGate.gate, 'max_kl');
  assert.ok(!existsSync(join(out, '03-bench')));
});

test("bad input: one line, exit 2, and an earlier run is left as it was; another recipe's folder needs --force", () => {
  const dir = tempDir();
  const out = join(dir, 'run');
  run(['int8', MHA, '-o', out, ...SMALL_BENCH]);
  const before = snapshot(out);
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };
  const unreadable = join(dir, 'folder.yaml');
  mkdirSync(unreadable);
  const cases: Array<[string[], RegExp]> = [
    [[join(dir, 'missing.yaml'), MHA], /missing.yaml: recipe not found/],
    [[unreadable, MHA], /folder.yaml: is a folder; give a recipe file/],
    [[file('bad.yaml', 'stages:\n  - pass: export\n  attention: [fused\n'), MHA], /bad.yaml: invalid YAML: /],
    [[file('pass.yaml', 'name: int8\nstages:\n  - pass: compress\n'), MHA], /pass.yaml: stage 1: pass: unknown pass "compress"/],
    [
      [file('key.yaml', 'name: int8\nstages:\n  - pass: quantize\n    to: int8\n    blok_size: 64\n'), MHA],
      /key.yaml: stage 1 \(quantize\): blok_size: unknown key/,
    ],
    [
      [file('gate.yaml', 'name: int8\nstages:\n  - pass: export\n    gate: { min_top1: 0.9 }\n'), MHA],
      /gate.yaml: stage 1 \(export\): gate.min_top1: export produces no top-1 figure here/,
    ],
    [
      [file('order.yaml', 'name: int8\nstages:\n  - pass: quantize\n    to: int4\n  - pass: prune\n    sparsity: "2:4"\n'), MHA],
      /order.yaml: stage 2 \(prune\): pass: prune cannot follow quantize/,
    ],
    [['int8', MHA, '--set', 'quantize.block_size=12'], /int8.yaml: stage 1 \(quantize\): block_size 12: choose one of 16, 32, 64, 128/],
    [['int8', MHA, '--from', 'nothing'], /--from nothing: .*int8.yaml has no such stage \(stages: quantize, eval, bench\)/],
    [['int8', join(dir, 'no-model')], /no-model: model folder not found/],
    [['quickstart'], /run: holds a run of recipe "int8", not "quickstart"; choose another -o, or add --force to replace it/],
  ];
  for (const [args, re] of cases) {
    const r = runCli(['run', ...args, '-o', out]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.deepEqual(snapshot(out), before, `${args.join(' ')} changed the earlier run`);
  }
  // A folder llmopt did not write is refused even with --force.
  const foreign = join(dir, 'mine');
  mkdirSync(foreign);
  writeFileSync(join(foreign, 'notes.txt'), 'keep me');
  const r = runCli(['run', 'int8', MHA, '-o', foreign, '--force']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /mine: exists and is not an llmopt output folder/);
  assert.equal(readFileSync(join(foreign, 'notes.txt'), 'utf8'), 'keep me');

  const forced = run(['quickstart', '-o', out, '--force', ...SMALL_DISTILL('distill'), ...SMALL_BENCH]);
  assert.equal(forced.stages.length, 5);
  assert.deepEqual(
    readdirSync(out).filter((f) => /^\d\d-/.test(f)),
    ['01-prune', '02-distill', '03-quantize', '04-eval', '05-bench'],
  );
});
