// The whole WebGPU matrix (`npm run test:webgpu`; not part of `npm test`, which runs webgpu.test.ts's
// subset): aidreams-260k in every attention form and precision, the tiny checkpoints of ../shared/models
// and the fixtures in every form, each against the CPU in its own child process; then the CLI's generate
// (plain and speculative) and eval on WebGPU, and the one-node GroupQueryAttention reproduction.
// LLMOPT_WEBGPU_CASES=<regex> narrows the cases; LLMOPT_TEST_WEBGPU=system runs on the machine's own adapter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { AIDREAMS, DREAMS_EVAL, NEEDS_SHARED, ROOT, runCli } from '../support.js';
import { artifact, fullMatrix, judge, specOf } from './matrix.js';
import { KL_TOLERANCE, NEEDS_WEBGPU, ON_SWIFTSHADER, runChecks, runCliWebGpu, webgpuEnv } from './support.js';

const skip = NEEDS_WEBGPU ?? NEEDS_SHARED;
const only = process.env.LLMOPT_WEBGPU_CASES ? new RegExp(process.env.LLMOPT_WEBGPU_CASES) : null;

for (const c of fullMatrix().filter((m) => !only || only.test(m.name))) {
  test(`WebGPU equals the CPU: ${c.name}`, { skip }, () => {
    const [r] = runChecks([specOf(c)]);
    process.stderr.write(`${c.name}: ${JSON.stringify({ ...r, greedy: undefined, serve: undefined, draft: undefined })}\n`);
    judge(c, r!);
  });
}

test('generate on WebGPU prints what it prints on the CPU, plain and with a draft', { skip }, () => {
  const target = artifact(AIDREAMS, 'fused', 'fp32');
  const draft = artifact(AIDREAMS, 'fused', 'int4');
  const args = ['generate', target, '--prompt', 'Once upon a time', '-n', '24', '--json'];
  const texts = (stdout: string) => (JSON.parse(stdout) as { outputs: { ids: number[]; text: string }[] }).outputs;
  const cpu = texts(runCli(args).stdout);
  for (const extra of [[], ['--draft', draft, '--draft-tokens', '3']]) {
    const r = runCliWebGpu([...args, '--device', 'webgpu', ...extra]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(texts(r.stdout), cpu, `generate ${extra.join(' ')}`);
  }
});

test('eval on WebGPU: KL against the checkpoint within 1e-5 of the CPU figure', { skip }, () => {
  const dir = artifact(AIDREAMS, 'fused', 'int4');
  const args = ['eval', dir, '--data', DREAMS_EVAL, '--reference', AIDREAMS, '--json'];
  const cpu = JSON.parse(runCli(args).stdout);
  const r = runCliWebGpu([...args, '--device', 'webgpu']);
  assert.equal(r.code, 0, r.stderr);
  const gpu = JSON.parse(r.stdout);
  assert.ok(
    Math.abs(gpu.reference.kl - cpu.reference.kl) <= KL_TOLERANCE,
    `KL ${gpu.reference.kl} on WebGPU, ${cpu.reference.kl} on the CPU`,
  );
});

test('scripts/repro-gqa-webgpu.ts: the one-node reproduction runs, and on SwiftShader reproduces the fault', { skip: NEEDS_WEBGPU }, () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'repro-gqa-webgpu.ts')], {
    cwd: ROOT,
    env: webgpuEnv(),
    encoding: 'utf8',
  });
  process.stderr.write(r.stdout);
  assert.ok(r.status === 0 || r.status === 1, r.stderr);
  if (ON_SWIFTSHADER) assert.equal(r.status, 1, 'onnxruntime fixed microsoft/onnxruntime#26064? Recheck the self-check routing');
});
