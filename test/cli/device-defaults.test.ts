// The defaults `export` and `quantize` take from the device the artifact is for (--device, default cpu): the
// attention form, MatMulNBits' accuracy_level, int8's activation residual and zero points, and whether the embedding
// and lm_head are quantized (and at what bits);
// explicit flags win, transformers.js gets a form it loads, and contradicting flags write nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeModel } from '../../src/formats/onnx/graph.js';
import { GQA, MHA, runCli, tempDir } from '../support.js';

/** Runs the CLI into a fresh folder and returns its --json report. */
function written(args: string[]): { report: Record<string, unknown> } {
  const out = join(tempDir(), 'm');
  const r = runCli([...args, '-o', out, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return { report: JSON.parse(r.stdout) };
}

/** accuracy_level of every MatMulNBits node, and the bits of the GatherBlockQuantized one (null without). */
function nbits(out: string): { levels: Set<number>; gatherBits: number | null } {
  const nodes = decodeModel(readFileSync(join(out, 'model.onnx'))).graph!.node!;
  const levels = new Set<number>();
  let gatherBits: number | null = null;
  for (const n of nodes) {
    const attr = (name: string) => Number(n.attribute!.find((a) => a.name === name)?.i ?? Number.NaN);
    if (n.opType === 'MatMulNBits') levels.add(attr('accuracy_level'));
    if (n.opType === 'GatherBlockQuantized') gatherBits = attr('bits');
  }
  return { levels, gatherBits };
}

test('export: inplace attention on the CPU by default, fused for --device webgpu and for --layout transformers.js', () => {
  assert.equal(written(['export', GQA]).report.attention, 'inplace');
  assert.equal(written(['export', GQA, '--device', 'webgpu']).report.attention, 'fused');
  assert.equal(written(['export', GQA, '--device', 'cuda']).report.attention, 'fused');
  assert.equal(written(['export', GQA, '--attention', 'standard']).report.attention, 'standard');
  const out = join(tempDir(), 'tjs');
  const r = runCli(['export', MHA, '-o', out, '--layout', 'transformers.js', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).attention, 'fused');
});

test('quantize --to int4 on the CPU: accuracy_level 4, inplace, embedding and lm_head at 8 bits; explicit flags win', () => {
  const cpu = join(tempDir(), 'q');
  assert.equal(runCli(['quantize', GQA, '-o', cpu, '--to', 'int4']).code, 0);
  const manifest = JSON.parse(readFileSync(join(cpu, 'llmopt.json'), 'utf8'));
  assert.equal(manifest.model.attention, 'inplace');
  const o = manifest.passes.find((p: { pass: string }) => p.pass === 'quantize').options;
  assert.deepEqual([o.accuracyLevel, o.quantizeEmbeddings, o.embeddingBits], [4, true, 8]);
  assert.deepEqual(nbits(cpu), { levels: new Set([4]), gatherBits: 8 });

  const gpu = join(tempDir(), 'q');
  assert.equal(runCli(['quantize', GQA, '-o', gpu, '--to', 'int4', '--device', 'webgpu']).code, 0);
  assert.equal(JSON.parse(readFileSync(join(gpu, 'llmopt.json'), 'utf8')).model.attention, 'fused');
  assert.deepEqual(nbits(gpu), { levels: new Set([0]), gatherBits: null });

  const asked = join(tempDir(), 'q');
  const flags = ['--accuracy-level', '0', '--float-embeddings', '--attention', 'fused'];
  assert.equal(runCli(['quantize', GQA, '-o', asked, '--to', 'int4', ...flags]).code, 0);
  assert.deepEqual(nbits(asked), { levels: new Set([0]), gatherBits: null });

  // The bare flag keeps its old meaning: the embedding at the layers' own bits.
  const four = join(tempDir(), 'q');
  assert.equal(runCli(['quantize', GQA, '-o', four, '--to', 'int4', '--quantize-embeddings']).code, 0);
  assert.equal(nbits(four).gatherBits, 4);
});

test('quantize --to int8 on the CPU: level 4 with the activation residual, zero points, 8-bit embedding; flags win', () => {
  const residualNodes = (out: string) =>
    decodeModel(readFileSync(join(out, 'model.onnx'))).graph!.node!.filter((n) => n.name!.includes('/Residual/')).length;
  const quantizeOptions = (out: string) =>
    JSON.parse(readFileSync(join(out, 'llmopt.json'), 'utf8')).passes.find((p: { pass: string }) => p.pass === 'quantize').options;
  const out = join(tempDir(), 'q');
  assert.equal(runCli(['quantize', GQA, '-o', out, '--to', 'int8']).code, 0);
  assert.deepEqual(nbits(out), { levels: new Set([4]), gatherBits: 8 });
  const o = quantizeOptions(out);
  assert.deepEqual([o.accuracyLevel, o.activationResidual, o.symmetric, o.embeddingBits], [4, true, false, 8]);
  assert.ok(residualNodes(out) > 0);
  // inspect reads the same settings back from the graph's nodes.
  const products = (dir: string) => /^products\s+(.*)$/m.exec(runCli(['inspect', dir]).stdout)?.[1];
  assert.match(
    products(out) ?? '',
    /^MatMulNBits: (\d+) nodes, blocks of 32, accuracy level 4, zero points in \1, activation residual in \1; GatherBlockQuantized: 1$/,
  );
  assert.equal(JSON.parse(readFileSync(join(out, 'llmopt.json'), 'utf8')).model.attention, 'inplace');

  // Level 0 computes in float: no residual to multiply.
  const level0 = join(tempDir(), 'q');
  assert.equal(runCli(['quantize', GQA, '-o', level0, '--to', 'int8', '--accuracy-level', '0']).code, 0);
  assert.equal(residualNodes(level0), 0);
  assert.equal(quantizeOptions(level0).activationResidual, undefined);
  const plain = join(tempDir(), 'q');
  const flags = ['--symmetric', '--float-embeddings', '--activation-residual', 'off'];
  assert.equal(runCli(['quantize', GQA, '-o', plain, '--to', 'int8', ...flags]).code, 0);
  assert.deepEqual(nbits(plain), { levels: new Set([4]), gatherBits: null });
  assert.deepEqual([residualNodes(plain), quantizeOptions(plain).symmetric], [0, true]);
  assert.match(products(plain) ?? '', /^MatMulNBits: \d+ nodes, blocks of 32, accuracy level 4, symmetric$/);
  // int4 takes it when asked; the GPU providers keep onnxruntime's defaults.
  const int4 = join(tempDir(), 'q');
  assert.equal(runCli(['quantize', GQA, '-o', int4, '--to', 'int4', '--activation-residual', 'on']).code, 0);
  assert.ok(residualNodes(int4) > 0);
  const gpu = join(tempDir(), 'q');
  assert.equal(runCli(['quantize', GQA, '-o', gpu, '--to', 'int8', '--device', 'webgpu']).code, 0);
  assert.deepEqual([residualNodes(gpu), quantizeOptions(gpu).symmetric], [0, true]);
  assert.deepEqual(nbits(gpu), { levels: new Set([0]), gatherBits: null });
  assert.match(products(gpu) ?? '', /^MatMulNBits: \d+ nodes, blocks of 32, accuracy level 0, symmetric$/);
});

test('bad defaults-related input: one line, exit 2, nothing written', () => {
  for (const [args, message] of [
    [
      ['quantize', GQA, '--to', 'int4', '--quantize-embeddings', '--float-embeddings'],
      /--float-embeddings contradicts --quantize-embeddings/,
    ],
    [['quantize', GQA, '--to', 'fp16', '--float-embeddings'], /--float-embeddings: only --to int4 and int8 quantize embeddings/],
    [['quantize', GQA, '--to', 'int8', '--symmetric', '--asymmetric'], /--symmetric contradicts --asymmetric: give one/],
    [['quantize', GQA, '--to', 'fp16', '--symmetric'], /--symmetric: --to fp16 has no blocks/],
    [
      ['quantize', GQA, '--to', 'int8', '--activation-residual', 'on', '--accuracy-level', '0'],
      /--activation-residual on corrects int8 activations: it needs --accuracy-level 4, not 0/,
    ],
    // The GPU providers' default level is 0: the residual has nothing to correct there.
    [
      ['quantize', GQA, '--to', 'int8', '--activation-residual', 'on', '--device', 'webgpu'],
      /--activation-residual on corrects int8 activations: it needs --accuracy-level 4, not 0/,
    ],
    [['quantize', GQA, '--to', 'fp16', '--activation-residual', 'on'], /--activation-residual on: MatMulNBits' option/],
    [['quantize', GQA, '--to', 'q8_0', '--format', 'gguf', '--symmetric'], /--symmetric: not a GGUF option/],
    [['export', GQA, '--format', 'gguf', '--device', 'cpu'], /--device: an ONNX option; --format gguf writes one llama.cpp file/],
    [['export', MHA, '--layout', 'transformers.js', '--attention', 'inplace'], /--attention inplace: .*transformers\.js runs/],
  ] as const) {
    const parent = tempDir();
    const r = runCli([...args, '-o', join(parent, args[0] === 'export' && args.includes('gguf') ? 'm.gguf' : 'out')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.deepEqual(readdirSync(parent), []);
  }
});
