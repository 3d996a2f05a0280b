// On the fixtures (multi-head and grouped-query, tied and untied, f32 and bf16): the fused, standard
// and inplace graphs agree, cached token-by-token decoding equals the full-sequence pass, and padding
// is inert.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GQA, MHA, exportedArtifact } from '../support.js';
import { DecoderModel, type StepLogits } from '../../src/runtime/decoder.js';

const PROMPTS = [
  [1, 300, 261, 270, 5, 290, 280, 301, 262, 263, 310, 299],
  [1, 44, 260, 319],
  [1, 270, 271, 272, 273, 274, 275],
];

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function fullLogits(model: DecoderModel, ids: number[]): Promise<StepLogits> {
  return model.forward(model.createCache(1, ids.length), [ids]);
}

for (const [name, dir] of [
  ['mha (tied, f32)', MHA],
  ['gqa (untied, bf16, bias, llama3 rope, sharded)', GQA],
] as const) {
  for (const other of ['standard', 'inplace'] as const) {
    test(`${name}: fused and ${other} logits agree within 1e-4`, async () => {
      const fused = await DecoderModel.open(await exportedArtifact(dir, 'fused'), { device: 'cpu' });
      const model = await DecoderModel.open(await exportedArtifact(dir, other), { device: 'cpu' });
      let worst = 0;
      for (const ids of PROMPTS) worst = Math.max(worst, maxDiff((await fullLogits(fused, ids)).data, (await fullLogits(model, ids)).data));
      console.log(`# ${name}: max |fused - ${other}| = ${worst.toExponential(3)}`);
      assert.ok(worst < 1e-4, `max diff ${worst}`);
    });
  }

  test(`${name} inplace: rows appending several tokens each to a non-empty cache equal each prompt alone`, async () => {
    // GroupQueryAttention allows this only at batch 1; the inplace form at any batch (speculative verification, chunked prefill).
    const model = await DecoderModel.open(await exportedArtifact(dir, 'inplace'), { device: 'cpu' });
    const cache = model.createCache(PROMPTS.length, 20);
    const heads = PROMPTS.map((p) => p.slice(0, 3));
    const tails = PROMPTS.map((p) => p.slice(3));
    await model.forward(cache, heads);
    const rest = await model.forward(cache, tails);
    assert.deepEqual(
      cache.lengths,
      PROMPTS.map((p) => p.length),
    );
    for (let b = 0; b < PROMPTS.length; b++) {
      const alone = await fullLogits(model, PROMPTS[b]!);
      for (let t = 3; t < PROMPTS[b]!.length; t++) assert.ok(maxDiff(rest.at(b, t - 3), alone.at(0, t)) < 1e-4, `row ${b} position ${t}`);
    }
  });

  test(`${name} inplace: a step asked for each row's last logits computes only those, equal to the full step's`, async () => {
    const model = await DecoderModel.open(await exportedArtifact(dir, 'inplace'), { device: 'cpu' });
    const full = await model.forward(model.createCache(PROMPTS.length, 16), PROMPTS);
    const last = await model.forward(model.createCache(PROMPTS.length, 16), PROMPTS, { logits: 'last' });
    assert.equal(last.data.length, PROMPTS.length * last.vocab, 'one row of logits per prompt');
    PROMPTS.forEach((p, b) => assert.ok(maxDiff(last.at(b, p.length - 1), full.at(b, p.length - 1)) < 1e-5, `row ${b}`));
    assert.throws(() => last.at(0, 0), /kept for position 11 only/);
  });

  for (const form of ['fused', 'standard', 'inplace'] as const) {
    test(`${name} ${form}: token-by-token decoding with the cache equals the full-sequence logits`, async () => {
      const model = await DecoderModel.open(await exportedArtifact(dir, form), { device: 'cpu' });
      const ids = PROMPTS[0]!;
      const full = await fullLogits(model, ids);
      // A 5-token prefill, then one token at a time.
      const cache = model.createCache(1, ids.length);
      const prefill = await model.forward(cache, [ids.slice(0, 5)]);
      let worst = 0;
      for (let t = 0; t < 5; t++) worst = Math.max(worst, maxDiff(prefill.at(0, t), full.at(0, t)));
      for (let t = 5; t < ids.length; t++) {
        const step = await model.forward(cache, [[ids[t]!]]);
        worst = Math.max(worst, maxDiff(step.at(0, 0), full.at(0, t)));
      }
      assert.ok(worst < 1e-4, `max diff ${worst}`);
    });

    test(`${name} ${form}: decoding past the first allocation (the cache buffers grow and keep their rows) equals the full pass`, async () => {
      const model = await DecoderModel.open(await exportedArtifact(dir, form), { device: 'cpu' });
      // Two rows of different lengths; the buffers start 64 slots past the prompt and must grow to hold 110.
      const rows = [PROMPTS[0]!, PROMPTS[1]!];
      const steps = 110 - rows[0]!.length;
      const cache = model.createCache(2, 120);
      await model.forward(cache, rows);
      const fed = rows.map((r) => [...r]);
      let step = await model.forward(cache, [[5], [6]]);
      fed[0]!.push(5);
      fed[1]!.push(6);
      for (let t = 1; t < steps; t++) {
        const next = [[((t * 7) % 250) + 3], [((t * 13) % 250) + 3]];
        step = await model.forward(cache, next);
        fed[0]!.push(next[0]![0]!);
        fed[1]!.push(next[1]![0]!);
      }
      for (let b = 0; b < 2; b++) {
        const full = await fullLogits(model, fed[b]!);
        const worst = maxDiff(step.at(b, 0), full.at(0, fed[b]!.length - 1));
        assert.ok(worst < 1e-4, `row ${b}: max diff ${worst}`);
      }
    });

    test(`${name} ${form}: truncating the cache (speculative rollback) then continuing equals the full pass`, async () => {
      const model = await DecoderModel.open(await exportedArtifact(dir, form), { device: 'cpu' });
      const ids = PROMPTS[0]!;
      const full = await fullLogits(model, ids);
      const cache = model.createCache(1, ids.length + 4);
      await model.forward(cache, [[...ids.slice(0, 6), 7, 8, 9]]); // three wrong tokens after 6 right ones
      cache.truncate(0, 6);
      const rest = await model.forward(cache, [ids.slice(6)]);
      let worst = 0;
      for (let t = 6; t < ids.length; t++) worst = Math.max(worst, maxDiff(rest.at(0, t - 6), full.at(0, t)));
      assert.ok(worst < 1e-4, `max diff ${worst}`);
    });

    test(`${name} ${form}: a padded batch equals each prompt run alone, through prefill and decode`, async () => {
      const model = await DecoderModel.open(await exportedArtifact(dir, form), { device: 'cpu' });
      const cache = model.createCache(PROMPTS.length, 16);
      const batched = await model.forward(cache, PROMPTS);
      const next = [[5], [6], [7]];
      const decoded = await model.forward(cache, next);
      for (let b = 0; b < PROMPTS.length; b++) {
        const ids = PROMPTS[b]!;
        const alone = await fullLogits(model, [...ids, next[b]![0]!]);
        for (let t = 0; t < ids.length; t++) assert.ok(maxDiff(batched.at(b, t), alone.at(0, t)) < 1e-4, `row ${b} position ${t}`);
        assert.ok(maxDiff(decoded.at(b, 0), alone.at(0, ids.length)) < 1e-4, `row ${b} decode step`);
      }
    });
  }
}
