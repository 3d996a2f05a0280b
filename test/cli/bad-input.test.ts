// Every bad input the foundation issue names: one clear line on stderr naming the file and the
// problem, exit code 2, and no output folder (nor temporary folder) left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MHA, exportedArtifact, runCli, tempDir } from '../support.js';

/** A copy of the mha fixture to break. */
function brokenCopy(edit: (dir: string) => void): string {
  const dir = join(tempDir(), 'model');
  cpSync(MHA, dir, { recursive: true });
  edit(dir);
  return dir;
}

function editConfig(dir: string, change: (cfg: Record<string, unknown>) => void): void {
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  change(cfg);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
}

/** Runs export into a fresh parent folder and checks the failure left nothing there. */
function exportFails(model: string, message: RegExp, options: string[] = []): void {
  const parent = tempDir();
  const out = join(parent, 'out');
  const r = runCli(['export', model, '-o', out, ...options]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.equal(r.stdout, '');
  assert.deepEqual(readdirSync(parent), [], 'no output or temporary folder is left');
}

test('export: a missing model folder', () => {
  exportFails(join(tempDir(), 'nope'), /nope.*(not found|no model\.safetensors)/);
});

test('export: a folder without config.json', () => {
  exportFails(
    brokenCopy((d) => writeFileSync(join(d, 'config.json'), '')),
    /config\.json: not valid JSON/,
  );
});

test('export: config.json that is not JSON', () => {
  exportFails(
    brokenCopy((d) => writeFileSync(join(d, 'config.json'), '{"model_type": "llama",')),
    /config\.json: not valid JSON/,
  );
});

test('export: a corrupt safetensors header', () => {
  exportFails(
    brokenCopy((d) => {
      const f = join(d, 'model.safetensors');
      const bytes = readFileSync(f);
      bytes.write('{"oops', 8, 'latin1');
      writeFileSync(f, bytes);
    }),
    /model\.safetensors/,
  );
});

test('export: a truncated safetensors file names the tensor that runs past the end', () => {
  exportFails(
    brokenCopy((d) => {
      const f = join(d, 'model.safetensors');
      truncateSync(f, statSync(f).size - 1000);
    }),
    /model\.safetensors.*(model\.|lm_head|embed)/,
  );
});

test('export: a tensor whose dtype disagrees with config.json', () => {
  exportFails(
    brokenCopy((d) => editConfig(d, (c) => (c.torch_dtype = 'bfloat16'))),
    /model\.safetensors: tensor "[^"]+" is F32, config\.json says torch_dtype bfloat16/,
  );
});

test('export: a tensor whose shape disagrees with config.json', () => {
  exportFails(
    brokenCopy((d) => editConfig(d, (c) => (c.intermediate_size = 96))),
    /tensor "model\.layers\.0\.mlp\.(gate|up|down)_proj\.weight" has shape \[\d+,\d+\], config\.json implies/,
  );
});

test('export: an unsupported architecture lists what is supported', () => {
  exportFails(
    brokenCopy((d) => editConfig(d, (c) => (c.model_type = 'gpt2'))),
    /model_type "gpt2" is not supported \(supported: llama, mistral/,
  );
});

test('export: an unsupported rope type lists what is supported', () => {
  exportFails(
    brokenCopy((d) => editConfig(d, (c) => (c.rope_scaling = { rope_type: 'yarn', factor: 4 }))),
    /rope_scaling type "yarn" is not supported \(supported: default, linear, llama3\)/,
  );
});

test('export: the inplace attention form with the transformers.js layout', () => {
  exportFails(MHA, /--attention inplace: .*transformers\.js runs --attention fused or standard/, [
    '--attention',
    'inplace',
    '--layout',
    'transformers.js',
  ]);
});

test('export: an existing folder that is not an llmopt output is refused and left untouched', () => {
  const parent = tempDir();
  const out = join(parent, 'precious');
  mkdirSync(out);
  writeFileSync(join(out, 'notes.txt'), 'keep me');
  const r = runCli(['export', MHA, '-o', out]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /precious: exists and is not an llmopt output folder/);
  assert.deepEqual(readdirSync(out), ['notes.txt']);
  assert.deepEqual(readdirSync(parent), ['precious']);
});

test('generate: a folder without model.onnx', () => {
  const r = runCli(['generate', MHA, '--prompt', 'hi']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /tiny-llama-mha: no model\.onnx/);
  assert.equal(r.stdout, '');
});

test('generate: a prompt longer than the context', async () => {
  const artifact = await exportedArtifact(MHA, 'fused');
  const r = runCli(['generate', artifact, '--prompt', 'the cat sat '.repeat(60)]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /prompt 1 is \d+ tokens, longer than the model's context of 128/);
  assert.equal(r.stdout, '');
});

test('generate and eval: text that is not UTF-8', async () => {
  const artifact = await exportedArtifact(MHA, 'fused');
  const bad = join(tempDir(), 'latin1.txt');
  writeFileSync(bad, Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0a])); // "café" in Latin-1
  const g = runCli(['generate', artifact, '--prompt-file', bad]);
  assert.equal(g.code, 2);
  assert.match(g.stderr, /latin1\.txt: not valid UTF-8/);
  const e = runCli(['eval', artifact, '--data', bad]);
  assert.equal(e.code, 2);
  assert.match(e.stderr, /latin1\.txt: not valid UTF-8/);
});

test('--device cuda without the CUDA provider, and an unknown device, are clear errors', async () => {
  const artifact = await exportedArtifact(MHA, 'fused');
  const cuda = runCli(['generate', artifact, '--prompt', 'hi', '--device', 'cuda']);
  assert.equal(cuda.code, 2);
  assert.match(cuda.stderr, /--device cuda: .*CUDA provider/);
  const tpu = runCli(['generate', artifact, '--prompt', 'hi', '--device', 'tpu']);
  assert.equal(tpu.code, 2);
  assert.match(tpu.stderr, /--device tpu: choose one of cpu, webgpu, cuda/);
});

test('unknown options and bad numbers exit 2', async () => {
  const artifact = await exportedArtifact(MHA, 'fused');
  assert.equal(runCli(['generate', artifact, '--prompt', 'hi', '--bogus']).code, 2);
  const r = runCli(['generate', artifact, '--prompt', 'hi', '--top-p', '2']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--top-p 2: expected a number/);
});

test('the temporary folder of a failed export sits beside the target and is removed', () => {
  // A failure after the temporary folder exists (a tensor that fails to read midway) must remove it.
  const model = brokenCopy((d) => {
    const f = join(d, 'model.safetensors');
    // Keep the header valid but make the file shorter than its last tensor.
    truncateSync(f, statSync(f).size - 4);
  });
  const parent = tempDir();
  const r = runCli(['export', model, '-o', join(parent, 'nested', 'out')]);
  assert.equal(r.code, 2);
  assert.ok(!existsSync(join(parent, 'nested', 'out')));
  assert.deepEqual(existsSync(join(parent, 'nested')) ? readdirSync(join(parent, 'nested')) : [], []);
  assert.ok(dirname(join(parent, 'nested', 'out')).startsWith(parent));
});
