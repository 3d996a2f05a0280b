// Quantized and pruned Qwen3 (../shared/models/qwen3-tiny) through the CLI: each variant exports, runs and
// evaluates against the float checkpoint, and inspect names the architecture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DREAMS_EVAL, needsSharedModel, runCli, sharedModel, tempDir } from '../support.js';

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
