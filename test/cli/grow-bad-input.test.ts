// Bad input of `synth --grow-from` and of drafts: one line on stderr naming the problem, exit 2, nothing written;
// and a grow that works, through the CLI, prints its shape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, MHA, exportedArtifact, runCli, tempDir } from '../support.js';

// The MHA fixture: hidden 64, 2 layers, 4/4 heads (head_dim 16), ffn 80, vocab 320, tied.
const GROW = ['synth', '--grow-from', MHA, '--layers', '3', '--heads', '8', '--kv-heads', '4', '--ffn', '256'];

/** Runs `args` with `-o <fresh parent>/out` and checks it failed as bad input, leaving the parent empty. */
function fails(args: string[], message: RegExp): void {
  const parent = tempDir();
  const r = runCli([...args, '-o', join(parent, 'out')]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.equal(r.stdout, '');
  assert.deepEqual(readdirSync(parent), [], 'no output or temporary folder is left');
}

test('synth --grow-from: a smaller shape is refused, naming the flag', () => {
  fails([...GROW, '--hidden', '32', '--heads', '4'], /--hidden 32 is smaller than the source's 64: --grow-from only grows/);
  fails([...GROW, '--hidden', '128', '--layers', '1'], /--layers 1 is smaller than the source's 2/);
  fails([...GROW, '--hidden', '128', '--ffn', '64'], /--ffn 64 is smaller than the source's 80/);
});

test('synth --grow-from: head counts that do not divide', () => {
  fails([...GROW, '--hidden', '128', '--heads', '6', '--kv-heads', '4'], /--heads 6 is not a multiple of --kv-heads 4/);
  fails([...GROW, '--hidden', '100', '--heads', '8'], /--hidden 100 is not a multiple of --heads 8; give --head-dim/);
  fails([...GROW, '--hidden', '128', '--head-dim', '24'], /head_dim 24 is not a multiple of the source's 16/);
  // 4 source kv heads cannot fit into 2.
  fails([...GROW, '--hidden', '128', '--kv-heads', '2'], /--kv-heads 2 is smaller than the source's 4/);
});

test('synth --grow-from: a source that is not Llama-shaped', () => {
  fails([...GROW, '--grow-from', GQA, '--hidden', '96', '--heads', '6', '--kv-heads', '2'], /needs a Llama-shaped model.*it has biases/);
  const qwen3 = join(tempDir(), 'qwen3');
  const made = runCli(
    ['synth', '--arch', 'qwen3', '--hidden', '64', '--layers', '1', '--heads', '2', '--kv-heads', '1', '--vocab', '320'].concat([
      '-o',
      qwen3,
    ]),
  );
  assert.equal(made.code, 0, made.stderr);
  fails([...GROW, '--grow-from', qwen3, '--hidden', '128'], /needs a Llama-shaped model.*architecture qwen3, q\/k norms/);
  fails([...GROW, '--hidden', '128', '--vocab', '512'], /--vocab cannot be combined with --grow-from/);
});

test('synth --grow-from: grows and reports the shape', () => {
  const out = join(tempDir(), 'grown');
  const r = runCli([...GROW, '--hidden', '128', '--noise', '0.01', '-o', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /hidden 128, 3 layers, heads 8\/4 kv, head_dim 16, ffn 256, vocab 320/);
  assert.ok(existsSync(join(out, 'model.safetensors')) && existsSync(join(out, 'tokenizer.json')));
});

test('generate --draft with another vocabulary: one line, exit 2', async () => {
  const target = await exportedArtifact(MHA, 'fused');
  const other = join(tempDir(), 'vocab-512');
  const made = runCli(['synth', '--hidden', '16', '--layers', '1', '--heads', '1', '--kv-heads', '1', '--vocab', '512', '-o', other]);
  assert.equal(made.code, 0, made.stderr);
  const draft = await exportedArtifact(other, 'fused');
  const r = runCli(['generate', target, '--draft', draft, '-p', 'the', '-n', '4']);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(r.stderr, /the draft's vocabulary has 512 tokens, the target's 320: a draft must share the target's tokenizer/);
});
