// Bad input for quantize and prune: one clear line naming the option, file or tensor, exit code 2,
// and nothing written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, MHA, SAMPLE_TEXT, runCli, tempDir } from '../support.js';

function failsCleanly(args: string[], message: RegExp): void {
  const parent = tempDir();
  const r = runCli([...args, '-o', join(parent, 'out')]);
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.deepEqual(readdirSync(parent), [], 'nothing written');
}

test('quantize: unknown --to, bad block size, gptq without --calib, missing or empty calibration file', () => {
  failsCleanly(['quantize', MHA, '--to', 'int3'], /--to int3: choose one of fp16, int8, int4, w8a8/);
  failsCleanly(['quantize', MHA, '--to', 'int4', '--block-size', '48'], /--block-size 48: choose one of 16, 32, 64, 128/);
  failsCleanly(['quantize', MHA, '--to', 'int4', '--method', 'gptq'], /--method gptq needs calibration text: give --calib/);
  failsCleanly(
    ['quantize', MHA, '--to', 'int4', '--method', 'gptq', '--calib', join(tempDir(), 'absent.txt')],
    /absent\.txt: file not found/,
  );
  const empty = join(tempDir(), 'empty.txt');
  writeFileSync(empty, '\n\n');
  failsCleanly(['quantize', MHA, '--to', 'int4', '--method', 'gptq', '--calib', empty], /empty\.txt: calibration file has no text/);
  failsCleanly(['quantize', MHA, '--to', 'fp16', '--method', 'gptq', '--calib', SAMPLE_TEXT], /--method gptq works with --to int4 or int8/);
  // Calibration text round-to-nearest would not read, in either format (it reads it for --clip search and --mix auto).
  const idle = /--calib: --method rtn reads no calibration text \(it weighs --clip search and measures --mix auto/;
  failsCleanly(['quantize', MHA, '--to', 'int4', '--calib', SAMPLE_TEXT], idle);
  failsCleanly(['quantize', MHA, '--to', 'q4_k', '--format', 'gguf', '--calib', SAMPLE_TEXT], idle);
  // The encoder threads are the GGUF writer's; an ONNX artifact's quantization has no such knob.
  failsCleanly(['quantize', MHA, '--to', 'int4', '--threads', '2'], /--threads: the GGUF encoder's threads \(add --format gguf\)/);
  failsCleanly(['quantize', MHA, '--to', 'q4_k', '--format', 'gguf', '--threads', '0'], /--threads 0: /);
});

test('quantize: a checkpoint that is already quantized', () => {
  const dir = tempDir();
  const ct = join(dir, 'ct');
  // Groups of 16 (MHA's down_proj has 80 inputs): vLLM serves them with Exllama, at float16 only.
  const made = runCli([
    'quantize',
    MHA,
    '--to',
    'int4',
    '--block-size',
    '16',
    '--format',
    'compressed-tensors',
    '--serve-dtype',
    'float16',
    '-o',
    ct,
    '-q',
  ]);
  assert.equal(made.code, 0, made.stderr);
  failsCleanly(['quantize', ct, '--to', 'int4'], /ct: already quantized \(compressed-tensors\)/);
});

test('quantize --format compressed-tensors: a ragged group is refused naming the tensor', () => {
  // The mha fixture's down_proj has in_features 80: not a multiple of 32, which vLLM requires.
  failsCleanly(['quantize', MHA, '--to', 'int4', '--format', 'compressed-tensors'], /down_proj/);
});

test('prune: N >= M, N < 1, a fraction outside (0, 1), an input dimension not divisible by M, a calibration method without --calib', () => {
  failsCleanly(['prune', MHA, '--sparsity', '4:4'], /--sparsity 4:4: N:M needs 1 <= N < M/);
  failsCleanly(['prune', MHA, '--sparsity', '0:4'], /--sparsity 0:4: N:M needs 1 <= N < M/);
  failsCleanly(['prune', MHA, '--sparsity', '1.5'], /--sparsity 1\.5: expected N:M \(such as 2:4\) or a fraction in \(0, 1\)/);
  failsCleanly(['prune', MHA, '--sparsity', '0'], /--sparsity 0: expected N:M/);
  // gqa: hidden 48 and ffn 72; 72 is not a multiple of 16.
  failsCleanly(['prune', GQA, '--sparsity', '8:16'], /model\.layers\.0\.mlp\.down_proj\.weight: in_features 72 is not divisible by M=16/);
  failsCleanly(['prune', MHA, '--sparsity', '2:4', '--method', 'wanda'], /--method wanda needs calibration text: give --calib/);
  failsCleanly(
    ['prune', MHA, '--sparsity', '2:4', '--calib', SAMPLE_TEXT],
    /--calib: --method magnitude reads no calibration text \(--method wanda and sparsegpt do\)/,
  );
  failsCleanly(
    ['prune', MHA, '--sparsity', '0.5', '--method', 'sparsegpt', '--calib', SAMPLE_TEXT, '--scope', 'layer'],
    /--scope layer works with --method magnitude or wanda/,
  );
});

test('prune --json reports per kind and per tensor; inspect --nm checks any checkpoint', () => {
  const out = join(tempDir(), 'p');
  const r = runCli(['prune', MHA, '--sparsity', '2:4', '-o', out, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.ok(Math.abs(report.byKind.q.sparsity - 0.5) < 1e-9);
  assert.ok(existsSync(join(out, 'llmopt.json')));
  const dense = JSON.parse(runCli(['inspect', MHA, '--nm', '2:4', '--json']).stdout);
  assert.equal(dense.nm.compliant, 0);
  const sparse = JSON.parse(runCli(['inspect', out, '--json']).stdout);
  assert.equal(sparse.nm.compliant, sparse.nm.tensors);
});
