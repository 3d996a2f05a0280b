// Eval: metric arithmetic, and the figures on aidreams-260k that ../shared/README.md gives from an
// independent float64 implementation (dense perplexity 4.500 over 4,499 predicted tokens).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { AIDREAMS, DREAMS_EVAL, GQA, MHA, NEEDS_SHARED, SAMPLE_TEXT, exportedArtifact, runCli } from '../support.js';
import { loadChunkedWindows } from '../../src/eval/chunks.js';
import { klDivergence, logSoftmax, MetricAccumulator } from '../../src/eval/metrics.js';
import { loadEvalWindows } from '../../src/eval/dataset.js';
import { checkGates, evaluate } from '../../src/eval/evaluate.js';
import { openReference } from '../../src/eval/reference.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { DecoderModel } from '../../src/runtime/decoder.js';

test('KL of a distribution with itself is 0; a known pair gives its closed form', () => {
  const p = logSoftmax(Float32Array.from([Math.log(0.5), Math.log(0.5)]));
  const q = logSoftmax(Float32Array.from([Math.log(0.9), Math.log(0.1)]));
  assert.equal(klDivergence(p, p), 0);
  const expected = 0.5 * Math.log(0.5 / 0.9) + 0.5 * Math.log(0.5 / 0.1);
  assert.ok(Math.abs(klDivergence(p, q) - expected) < 1e-7);
});

test('the accumulator counts tokens, NLL and top-1 agreement', () => {
  const acc = new MetricAccumulator();
  const a = logSoftmax(Float32Array.from([2, 0, 0]));
  const b = logSoftmax(Float32Array.from([0, 2, 0]));
  acc.add(a, 0, a);
  acc.add(a, 1, b);
  assert.equal(acc.tokens, 2);
  assert.equal(acc.agree, 1);
  assert.ok(Math.abs(acc.nll - (-a[0]! - a[1]!)) < 1e-12);
});

test('windows: one per line with <s>, split at the context length', () => {
  const tok = loadTokenizer(MHA);
  const windows = loadEvalWindows(SAMPLE_TEXT, tok, 16);
  assert.ok(windows.every((w) => w.ids.length <= 16 && w.ids.length >= 2));
  assert.equal(windows[0]!.ids[0], 1);
  assert.deepEqual(new Set(windows.map((w) => w.line)), new Set([1, 2, 3, 4, 5, 6]));
});

test('gates pass and fail on the figures', () => {
  const report = {
    windows: 1,
    tokens: 10,
    perplexity: 5,
    meanNll: 1,
    seconds: 0,
    reference: { perplexity: 4, kl: 0.02, klMax: 0.1, top1: 0.9, pplRatio: 1.25 },
  };
  const results = checkGates(report, { maxKl: 0.01, minTop1: 0.8, maxPplRatio: 1.3 });
  assert.deepEqual(
    results.map((r) => r.passed),
    [false, true, true],
  );
});

test('aidreams-260k dense: perplexity 4.500 over 4,499 tokens, KL 0 and top-1 1 against its own checkpoint', {
  skip: NEEDS_SHARED,
}, async () => {
  const dir = await exportedArtifact(AIDREAMS, 'fused');
  const model = await DecoderModel.open(dir, { device: 'cpu' });
  const reference = await openReference(AIDREAMS, { device: 'cpu' });
  const windows = loadEvalWindows(DREAMS_EVAL, loadTokenizer(dir), model.spec.maxPositions);
  const r = await evaluate(model, windows, reference.model, { batchSize: 8 });
  await reference.close();
  console.log(
    `# aidreams dense: ppl ${r.perplexity.toFixed(4)}, tokens ${r.tokens}, KL ${r.reference!.kl.toExponential(2)}, top-1 ${r.reference!.top1}`,
  );
  assert.equal(r.windows, 40);
  assert.equal(r.tokens, 4499);
  assert.ok(Math.abs(r.perplexity - 4.5) < 0.0005, `perplexity ${r.perplexity}`);
  assert.ok(r.reference!.kl < 1e-6);
  assert.equal(r.reference!.top1, 1);
});

test('--chunks n: windows as llama-perplexity -c n cuts the text (one stream, <s> first, the second halves scored)', () => {
  const tokenizer = loadTokenizer(GQA);
  const ids = tokenizer.encode(readFileSync(SAMPLE_TEXT, 'utf8'));
  const windows = loadChunkedWindows(SAMPLE_TEXT, tokenizer, 16, 64, 1);
  assert.equal(windows.length, Math.floor(ids.length / 16));
  windows.forEach((w, c) => {
    assert.deepEqual(w.ids, [1, ...ids.slice(c * 16 + 1, (c + 1) * 16)]);
    assert.equal(w.scoreFrom, 8);
  });
  assert.throws(() => loadChunkedWindows(SAMPLE_TEXT, tokenizer, 128, 64, 1), /--chunks 128: longer than the model's context of 64/);
  const r = runCli(['eval', GQA, '--data', SAMPLE_TEXT, '--chunks', '16', '--limit', '2']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--limit counts documents; --chunks reads the text as one stream/);
});
