// fp16, w8a8 and int4 with quantized embeddings on the architectures beyond Llama (../shared/models/*-tiny),
// and on a Qwen3 with a 151,936-token vocabulary: each variant exports, evaluates against its float checkpoint
// (KL within what the precision costs) and generates.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { DREAMS_EVAL, needsSharedModel, runCli, SAMPLE_TEXT, sharedModel, tempDir } from '../support.js';

function ok(args: string[]): string {
  const r = runCli(args);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

function klAgainst(artifact: string, reference: string, data: string): number {
  const r = JSON.parse(ok(['eval', artifact, '--data', data, '--reference', reference, '--limit', '4', '--threads', '2', '--json']));
  return r.reference.kl;
}

/** Each precision and the KL it may cost on a random-weight tiny model (int4 of embeddings and head costs most). */
const VARIANTS: Array<{ name: string; args: string[]; maxKl: number }> = [
  { name: 'fp16', args: ['--to', 'fp16'], maxKl: 1e-4 },
  { name: 'w8a8', args: ['--to', 'w8a8'], maxKl: 0.05 },
  { name: 'int4+embeddings', args: ['--to', 'int4', '--quantize-embeddings'], maxKl: 0.5 },
];

for (const model of ['gemma3-tiny', 'phi3-tiny'] as const) {
  test(`${model}: fp16, w8a8 and int4 with quantized embeddings export, evaluate and generate`, { skip: needsSharedModel(model) }, () => {
    const source = sharedModel(model);
    const dir = tempDir();
    const kl: Record<string, number> = {};
    for (const v of VARIANTS) {
      const out = join(dir, v.name);
      ok(['quantize', source, ...v.args, '-o', out, '-q']);
      kl[v.name] = klAgainst(out, source, DREAMS_EVAL);
      assert.ok(kl[v.name]! >= 0 && kl[v.name]! < v.maxKl, `${model} ${v.name}: KL ${kl[v.name]} (at most ${v.maxKl})`);
    }
    console.log(`# ${model} KL against float (4 documents): ${JSON.stringify(kl)}`);
    const r = JSON.parse(ok(['generate', join(dir, 'int4+embeddings'), '--prompt', 'Once upon', '-n', '6', '--json']));
    assert.equal(r.generatedTokens, 6);
  });
}

test('a Qwen3 with a 151,936-token vocabulary: int4 embeddings and head, and fp16, stay close to float', () => {
  const dir = tempDir();
  const source = join(dir, 'qwen3-large-vocab');
  ok(
    ['synth', '--arch', 'qwen3', '-o', source, '--hidden', '64', '--layers', '2', '--heads', '4', '--kv-heads', '2'].concat([
      '--head-dim',
      '32',
      '--ffn',
      '128',
      '--vocab',
      '151936',
      '--context',
      '256',
      '--tied',
    ]),
  );
  const kl: Record<string, number> = {};
  // The vocabulary's weight is in the embedding and head: fp16 and int4 quantize both (w8a8 leaves them float).
  for (const v of VARIANTS.filter((x) => x.name !== 'w8a8')) {
    const out = join(dir, v.name);
    ok(['quantize', source, ...v.args, '-o', out, '-q']);
    kl[v.name] = klAgainst(out, source, SAMPLE_TEXT);
    assert.ok(kl[v.name]! >= 0 && kl[v.name]! < v.maxKl, `${v.name}: KL ${kl[v.name]} (at most ${v.maxKl})`);
  }
  console.log(`# qwen3 vocab 151936 KL against float: ${JSON.stringify(kl)}`);
  const inspect = ok(['inspect', join(dir, 'int4+embeddings')]);
  assert.match(inspect, /vocab 151936/);
});
