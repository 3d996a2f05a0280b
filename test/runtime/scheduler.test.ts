// Continuous batching against each request run alone: the same greedy tokens with fewer slots than
// requests, mixed prompt and output lengths (free slots must not disturb busy ones); the standard
// form falls back to static batching; a finished slot is refilled without waiting for the batch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GQA, MHA, exportedArtifact } from '../support.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { serve, type Request } from '../../src/runtime/scheduler.js';
import { generate } from '../../src/runtime/generate.js';
import { GREEDY } from '../../src/runtime/sampling.js';

const REQUESTS: Request[] = [
  { prompt: [1, 300, 261, 270, 5, 290, 280, 301, 262, 263, 310, 299], maxNewTokens: 3 },
  { prompt: [1, 44, 260, 319], maxNewTokens: 17 },
  { prompt: [1, 270, 271, 272, 273, 274, 275], maxNewTokens: 6, arrival: 0.02 },
  { prompt: [1, 9], maxNewTokens: 11 },
  { prompt: [1, 100, 200, 300, 10, 20, 30, 40, 50], maxNewTokens: 2, arrival: 0.01 },
];

async function alone(model: DecoderModel, r: Request): Promise<number[]> {
  return (await serve(model, [{ ...r, arrival: 0 }], { slots: 1, policy: 'static', stopTokens: [] })).completions[0]!.tokens;
}

for (const [name, dir, form] of [
  ['mha', MHA, 'fused'],
  ['gqa', GQA, 'fused'],
  ['gqa', GQA, 'inplace'],
] as const) {
  test(`${name} ${form}: continuous batching with 2 slots gives each request's greedy tokens alone`, async () => {
    const model = await DecoderModel.open(await exportedArtifact(dir, form), { device: 'cpu' });
    const r = await serve(model, REQUESTS, { slots: 2, stopTokens: [] });
    assert.equal(r.policy, 'continuous');
    for (let i = 0; i < REQUESTS.length; i++) {
      assert.equal(r.completions[i]!.tokens.length, REQUESTS[i]!.maxNewTokens, `request ${i} length`);
      assert.deepEqual(r.completions[i]!.tokens, await alone(model, REQUESTS[i]!), `request ${i}`);
      const c = r.completions[i]!;
      assert.ok(c.tokenTimes[0]! >= c.arrival, 'no token before its request arrives');
    }
    assert.equal(
      r.decodeTokens,
      REQUESTS.reduce((a, q) => a + q.maxNewTokens - 1, 0),
    );
  });
}

test('static batching steps until the longest row; continuous refills a finished slot at once', async () => {
  const model = await DecoderModel.open(await exportedArtifact(MHA, 'fused'), { device: 'cpu' });
  const requests: Request[] = [2, 20, 2, 20].map((n, i) => ({ prompt: [1, 10 + i, 20 + i], maxNewTokens: n }));
  const continuous = await serve(model, requests, { slots: 2, stopTokens: [] });
  const batched = await serve(model, requests, { slots: 2, policy: 'static', stopTokens: [] });
  assert.deepEqual(
    continuous.completions.map((c) => c.tokens),
    batched.completions.map((c) => c.tokens),
  );
  // static: two batches of 19 steps; continuous: the short requests leave after one step and the long ones run together.
  assert.equal(batched.decodeSteps, 38);
  assert.ok(continuous.decodeSteps <= 21, `continuous took ${continuous.decodeSteps} steps`);
});

test('standard form: several prompts fall back to static batching with the same tokens', async () => {
  const fused = await DecoderModel.open(await exportedArtifact(GQA, 'fused'), { device: 'cpu' });
  const standard = await DecoderModel.open(await exportedArtifact(GQA, 'standard'), { device: 'cpu' });
  const r = await serve(standard, REQUESTS, { slots: 2, stopTokens: [] });
  assert.equal(r.policy, 'static');
  const f = await serve(fused, REQUESTS, { slots: 2, stopTokens: [] });
  assert.deepEqual(
    r.completions.map((c) => c.tokens),
    f.completions.map((c) => c.tokens),
  );
});

test('generate: several prompts, fewer slots, and zero new tokens', async () => {
  const model = await DecoderModel.open(await exportedArtifact(MHA, 'fused'), { device: 'cpu' });
  const prompts = REQUESTS.map((r) => r.prompt);
  const all = await generate(model, prompts, { maxNewTokens: 5, sampling: GREEDY, stopTokens: [] });
  const two = await generate(model, prompts, { maxNewTokens: 5, sampling: GREEDY, stopTokens: [], maxBatch: 2 });
  assert.deepEqual(two.tokens, all.tokens);
  const none = await generate(model, prompts, { maxNewTokens: 0, sampling: GREEDY });
  assert.deepEqual(
    none.tokens,
    prompts.map(() => []),
  );
});

test('a batch size that is not a positive integer is bad input', async () => {
  const model = await DecoderModel.open(await exportedArtifact(MHA, 'fused'), { device: 'cpu' });
  await assert.rejects(serve(model, REQUESTS, { slots: 0 }), { name: 'InputError', message: /positive integer/ });
});

test('the model states whether its caches adopt rows; serving releases every cache it creates', async () => {
  const fused = await DecoderModel.open(await exportedArtifact(GQA, 'fused'), { device: 'cpu' });
  const inplace = await DecoderModel.open(await exportedArtifact(GQA, 'inplace'), { device: 'cpu' });
  const standard = await DecoderModel.open(await exportedArtifact(GQA, 'standard'), { device: 'cpu' });
  assert.deepEqual(
    [fused, inplace, standard].map((m) => m.capabilities.adoptRows),
    [true, true, false],
  );
  assert.throws(() => standard.createCache(1, 4).adoptRow(0, standard.createCache(1, 4), 0), /cannot take over rows/);
  for (const model of [fused, standard]) {
    // Count the caches the scheduler creates and releases through the model's own createCache.
    let open = 0;
    const create = model.createCache.bind(model);
    model.createCache = (batch, capacity) => {
      const cache = create(batch, capacity);
      open++;
      const release = cache.release.bind(cache);
      cache.release = () => {
        open--;
        return release();
      };
      return cache;
    };
    await serve(model, REQUESTS, { slots: 2, stopTokens: [] });
    assert.equal(open, 0, `${model.form}: caches left unreleased`);
  }
});
