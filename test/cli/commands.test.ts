// The CLI as a user runs it: results on stdout (JSON that parses with --json), nothing on stderr
// off a terminal, exit 1 for a failed gate, and --help with an example for every command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, MHA, SAMPLE_TEXT, runCli, tempDir, exportedArtifact } from '../support.js';

test('every command has --help with an example', () => {
  for (const cmd of ['run', 'inspect', 'export', 'generate', 'eval']) {
    const r = runCli([cmd, '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Example:\n\s+\$ llmopt /, cmd);
  }
});

test('export --json writes a complete artifact folder and reports it', () => {
  const out = join(tempDir(), 'm');
  const r = runCli(['export', GQA, '-o', out, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const report = JSON.parse(r.stdout);
  assert.equal(report.attention, 'inplace'); // the CPU's default form (--device cpu)
  for (const f of [
    'model.onnx',
    'model.onnx.data',
    'config.json',
    'generation_config.json',
    'tokenizer.json',
    'tokenizer_config.json',
    'llmopt.json',
  ]) {
    assert.ok(existsSync(join(out, f)), f);
  }
  const manifest = JSON.parse(readFileSync(join(out, 'llmopt.json'), 'utf8'));
  assert.equal(manifest.passes[0].pass, 'export');
  assert.equal(manifest.source.path, GQA);
  assert.equal(typeof manifest.tool.version, 'string');
});

test('generate --json: greedy ids are reproducible and batched prompts are reported per prompt', async () => {
  const artifact = await exportedArtifact(MHA, 'fused');
  const args = ['generate', artifact, '-p', 'Once upon a time', '-p', 'the cat', '-n', '8', '--json'];
  const a = runCli(args);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stderr, '');
  const ra = JSON.parse(a.stdout);
  assert.equal(ra.outputs.length, 2);
  assert.equal(ra.outputs[0].ids.length, 8);
  assert.deepEqual(JSON.parse(runCli(args).stdout).outputs, ra.outputs);
  const sampled = runCli(['generate', artifact, '-p', 'the', '-n', '8', '--temperature', '1', '--seed', '3', '--json']);
  assert.deepEqual(
    JSON.parse(sampled.stdout).outputs,
    JSON.parse(runCli(['generate', artifact, '-p', 'the', '-n', '8', '--temperature', '1', '--seed', '3', '--json']).stdout).outputs,
  );
});

test('generate streams text to stdout', async () => {
  const artifact = await exportedArtifact(MHA, 'standard');
  const r = runCli(['generate', artifact, '-p', 'Once upon a time', '-n', '4']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith('Once upon a time'));
  assert.equal(r.stderr, '');
});

test('eval: gates pass with exit 0 and fail with exit 1 naming the gate', async () => {
  const artifact = await exportedArtifact(MHA, 'fused');
  const pass = runCli(['eval', artifact, '--data', SAMPLE_TEXT, '--reference', MHA, '--max-kl', '0.001', '--min-top1', '0.99', '--json']);
  assert.equal(pass.code, 0, pass.stderr);
  const report = JSON.parse(pass.stdout);
  assert.ok(report.reference.kl < 1e-6);
  assert.ok(report.gates.every((g: { passed: boolean }) => g.passed));
  const fail = runCli(['eval', artifact, '--data', SAMPLE_TEXT, '--reference', MHA, '--max-ppl-ratio', '0.5']);
  assert.equal(fail.code, 1);
  assert.match(fail.stderr, /quality gate failed: max-ppl-ratio 0\.5 \(measured 1\.00000\)/);
  assert.match(fail.stdout, /perplexity/);
});

test('eval: a gate without --reference is bad input', async () => {
  const artifact = await exportedArtifact(MHA, 'fused');
  const r = runCli(['eval', artifact, '--data', SAMPLE_TEXT, '--max-kl', '0.1']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /need --reference/);
});

test('inspect --json on a Hugging Face folder and on its artifact', async () => {
  const hf = JSON.parse(runCli(['inspect', MHA, '--json']).stdout);
  const art = JSON.parse(runCli(['inspect', await exportedArtifact(MHA, 'fused'), '--json']).stdout);
  assert.equal(hf.kind, 'huggingface');
  assert.equal(art.kind, 'artifact');
  assert.equal(hf.parameters, art.parameters);
  assert.equal(hf.weightBits, undefined);
  // A quantization llmopt does not read still inspects: its tensors as stored, no bits per module.
  const other = join(tempDir(), 'bnb');
  cpSync(MHA, other, { recursive: true });
  const config = JSON.parse(readFileSync(join(other, 'config.json'), 'utf8'));
  writeFileSync(join(other, 'config.json'), JSON.stringify({ ...config, quantization_config: { quant_method: 'bitsandbytes' } }));
  const r = runCli(['inspect', other, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const bnb = JSON.parse(r.stdout);
  assert.deepEqual([bnb.parameters, bnb.weightBits], [hf.parameters, undefined]);
});

test('run: the quick start (a bare `llmopt run`) runs recipes/quickstart.yaml on the bundled fixture into out/quickstart', () => {
  const cwd = tempDir();
  const r = runCli(['run', '--json'], cwd);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.recipe.name, 'quickstart');
  assert.deepEqual(
    report.stages.map((s: { dir: string; status: string }) => `${s.dir} ${s.status}`),
    ['01-prune ran', '02-distill ran', '03-quantize ran', '04-eval ran', '05-bench ran'],
  );
  assert.equal(report.failedGate, null);
  for (const f of ['report.md', 'report.json', '03-quantize/model.onnx']) assert.ok(existsSync(join(cwd, 'out', 'quickstart', f)), f);
});
