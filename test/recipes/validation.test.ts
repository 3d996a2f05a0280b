// Recipes whose options conflict fail before anything runs: exit 2, one line naming the recipe file,
// the stage and the key, and the run folder is never created.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MHA, SAMPLE_TEXT, runCli, tempDir } from '../support.js';

function refused(yaml: string, message: RegExp): void {
  const dir = tempDir();
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, yaml);
  const out = join(dir, 'out');
  const r = runCli(['run', file, MHA, '-o', out]);
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.ok(r.stderr.startsWith(`llmopt: ${file}: `), r.stderr);
  assert.match(r.stderr, message);
  assert.equal(existsSync(out), false, 'nothing written');
}

test('conflicting options in a recipe are refused at validation, naming file, stage and key', () => {
  const prune = (extra: string) => `data: ${SAMPLE_TEXT}\nstages:\n  - pass: prune\n    sparsity: 0.5\n${extra}`;
  refused(
    prune('    method: sparsegpt\n    scope: layer\n'),
    /stage 1 \(prune\): scope layer works with method magnitude or wanda; sparsegpt prunes each output row/,
  );
  const quantize = (extra: string) => `stages:\n  - name: q\n    pass: quantize\n${extra}`;
  refused(
    quantize('    to: fp16\n    block_size: 64\n'),
    /stage 1 \(q\): block_size 64: to fp16 has no blocks \(block sizes apply to int4 and int8\)$/m,
  );
  refused(quantize('    to: w8a8\n    block_size: 32\n'), /stage 1 \(q\): block_size 32: to w8a8 has no blocks/);
  refused(quantize('    to: int4\n    block_size: 48\n'), /stage 1 \(q\): block_size 48: choose one of 16, 32, 64, 128$/m);
  refused(
    quantize(`    to: fp16\n    method: gptq\n    calib: ${SAMPLE_TEXT}\n`),
    /stage 1 \(q\): method gptq works with to int4 or int8, not fp16$/m,
  );
  refused(
    quantize('    to: int4\n    method: gptq\n'),
    /stage 1 \(q\): calib: missing calibration data: give calib: <file> here, or data: <file>/,
  );
  refused(
    quantize('    to: fp16\n    format: compressed-tensors\n'),
    /stage 1 \(q\): format compressed-tensors writes int4 or int8 weights, not fp16$/m,
  );
  refused(quantize('    to: fp16\n    quantize_embeddings: true\n'), /stage 1 \(q\): quantize_embeddings needs to int4 or int8$/m);
  refused(
    'stages:\n  - pass: export\n    attention: inplace\n    layout: transformers.js\n',
    /stage 1 \(export\): attention inplace: its cache inputs are llmopt's own; transformers.js runs attention fused or standard$/m,
  );
  refused(
    'stages:\n  - pass: shard\n    tp: 2\n    stages: 0-0,1-1\n    format: tensorrt-llm\n',
    /stage 1 \(shard\): stages does not apply to format tensorrt-llm/,
  );
  refused(
    `data: ${SAMPLE_TEXT}\nstages:\n  - pass: distill\n    student_layers: 1\n    student_layer_ids: [0]\n`,
    /stage 1 \(distill\): student_layers and student_layer_ids are alternatives: give one$/m,
  );
});

test('the command line refuses the same conflicts, naming flags', () => {
  const out = join(tempDir(), 'out');
  const r = runCli(['quantize', MHA, '--to', 'fp16', '--block-size', '64', '-o', out]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^llmopt: --block-size 64: --to fp16 has no blocks \(block sizes apply to int4 and int8\)\n$/);
  assert.equal(existsSync(out), false);
  // The default block size is no request: fp16 without --block-size still runs.
  assert.equal(runCli(['quantize', MHA, '--to', 'fp16', '-o', out, '--json']).code, 0);
});
