// Sliding layers' caches trimmed to their window: after many more decode steps than the window, a local layer's cache
// tensors hold at most `window` slots (global ones the whole context), and every output equals the untrimmed graph's
// (the transformers.js layout keeps whole caches): token-by-token decoding, continuous batching, speculative rollback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { exportedArtifact, needsSharedModel, sharedModel, tempDir } from '../support.js';
import { exportModel } from '../../src/passes/export.js';
import { layerWindow } from '../../src/core/spec.js';
import { io, type AttentionForm } from '../../src/core/io.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import type { KvCache } from '../../src/runtime/kv-cache.js';
import { serve, type Request } from '../../src/runtime/scheduler.js';
import { speculativeGenerate } from '../../src/runtime/speculative.js';
import { GREEDY } from '../../src/runtime/sampling.js';
import { ShardedModel } from '../../src/runtime/sharded/model.js';
import { shardModel } from '../../src/passes/shard/shard.js';
import { GEMMA2, writeCheckpoint } from '../model/window-checkpoints.js';
import { maxDiff } from '../model/window-checks.js';

const skip = needsSharedModel('gemma3-tiny');
/** 40 ids: five windows of 8. */
const IDS = Array.from({ length: 40 }, (_, i) => (i * 53 + 7) % 500);

/** The slots each cache tensor of `cache` holds, by layer: [B, kvH, slots, D], or [B, kvH, D, slots] for inplace keys. */
function slotsByLayer(cache: KvCache, form: AttentionForm): Map<number, number> {
  const out = new Map<number, number>();
  for (const [name, t] of cache.held()) {
    const slots = form === 'inplace' && name.endsWith('.key') ? t.dims[3]! : t.dims[2]!;
    const layer = Number(name.split('.')[1]);
    out.set(layer, Math.max(out.get(layer) ?? 0, slots));
  }
  return out;
}

/** An untrimmed export (the transformers.js layout: whole caches, no attention_mask_local) of `source`. */
async function wholeCacheModel(source: string, form: AttentionForm): Promise<DecoderModel> {
  const out = join(tempDir(), 'whole');
  await exportModel(source, out, { attention: form, layout: 'transformers.js' });
  return DecoderModel.open(out, { device: 'cpu' });
}

for (const form of ['fused', 'standard', 'inplace'] as const) {
  test(`gemma3-tiny ${form}: local caches stay within the window past ${IDS.length} decode steps; logits as the whole cache's`, {
    skip,
  }, async () => {
    const source = sharedModel('gemma3-tiny');
    const model = await DecoderModel.open(await exportedArtifact(source, form), { device: 'cpu' });
    assert.ok(model.windowedCache, 'the llmopt export takes attention_mask_local');
    const W = model.spec.slidingWindow!;
    // The reference: the same model's logits with nothing trimmed, one pass over the whole sequence (and, where the
    // transformers.js layout runs the form, its whole-cache graph decoded token by token).
    const full = await model.forward(model.createCache(1, IDS.length), [IDS]);
    const whole = form === 'inplace' ? null : await wholeCacheModel(source, form);
    assert.equal(whole?.windowedCache ?? false, false);
    const cache = model.createCache(1, IDS.length);
    const wholeCache = whole?.createCache(1, IDS.length);
    await model.forward(cache, [IDS.slice(0, 2)]);
    if (whole) await whole.forward(wholeCache!, [IDS.slice(0, 2)]);
    let diff = 0;
    let vsWhole = 0;
    for (let t = 2; t < IDS.length; t++) {
      const step = await model.forward(cache, [[IDS[t]!]]);
      diff = Math.max(diff, maxDiff(step.at(0, 0), full.at(0, t)));
      if (whole) vsWhole = Math.max(vsWhole, maxDiff(step.at(0, 0), (await whole.forward(wholeCache!, [[IDS[t]!]])).at(0, 0)));
      for (const [layer, slots] of slotsByLayer(cache, form)) {
        if (layerWindow(model.spec, layer) !== null) assert.ok(slots <= W, `step ${t}: layer ${layer} holds ${slots} slots > ${W}`);
        else assert.ok(slots >= t + 1, `step ${t}: global layer ${layer} holds ${slots} slots, fewer than the ${t + 1} tokens`);
      }
    }
    const slots = slotsByLayer(cache, form);
    console.log(
      `# ${form}: after ${IDS.length} tokens, local layers hold ${slots.get(0)} slots, global ${slots.get(5)}; ` +
        `|cached - full pass| ${diff.toExponential(2)}${whole ? `, |trimmed - whole cache| ${vsWhole.toExponential(2)}` : ''}`,
    );
    assert.ok(diff < 1e-4, `cached decoding with trimmed caches differs from the full pass by ${diff}`);
    assert.ok(vsWhole < 1e-4, `trimmed caches differ from whole caches by ${vsWhole}`);
    await model.release();
    await whole?.release();
  });
}

const REQUESTS: Request[] = [
  { prompt: IDS.slice(0, 13), maxNewTokens: 14 },
  { prompt: IDS.slice(3, 6), maxNewTokens: 20 },
  { prompt: IDS.slice(10, 30), maxNewTokens: 5, arrival: 0.01 },
  { prompt: IDS.slice(20, 22), maxNewTokens: 12 },
];

for (const form of ['fused', 'inplace'] as const) {
  test(`gemma3-tiny ${form}: continuous batching over trimmed caches gives each request's tokens alone, untrimmed`, {
    skip,
  }, async () => {
    const model = await DecoderModel.open(await exportedArtifact(sharedModel('gemma3-tiny'), form), { device: 'cpu' });
    const r = await serve(model, REQUESTS, { slots: 2, stopTokens: [] });
    assert.equal(r.policy, 'continuous');
    // Reference: each request alone on the whole-cache graph (the fused form's transformers.js export).
    const whole = await wholeCacheModel(sharedModel('gemma3-tiny'), 'fused');
    for (let i = 0; i < REQUESTS.length; i++) {
      const alone = await serve(whole, [{ ...REQUESTS[i]!, arrival: 0 }], { slots: 1, policy: 'static', stopTokens: [] });
      assert.deepEqual(r.completions[i]!.tokens, alone.completions[0]!.tokens, `request ${i}`);
    }
    await model.release();
    await whole.release();
  });
}

test('gemma3-tiny drafted by a Gemma 2, every form: speculative decoding rolls back trimmed caches and equals plain greedy', {
  skip,
}, async () => {
  const target = sharedModel('gemma3-tiny');
  // A random model of the same vocabulary, windowed too: it proposes badly, so most rounds reject and roll back both.
  const draftDir = await writeCheckpoint(GEMMA2);
  const prompt = IDS.slice(0, 11);
  const plain = await wholeCacheModel(target, 'fused');
  const expected = (await serve(plain, [{ prompt, maxNewTokens: 30 }], { slots: 1, policy: 'static', stopTokens: [] })).completions[0]!
    .tokens;
  for (const form of ['fused', 'standard', 'inplace'] as const) {
    const model = await DecoderModel.open(await exportedArtifact(target, form), { device: 'cpu' });
    const draft = await DecoderModel.open(await exportedArtifact(draftDir, form), { device: 'cpu' });
    assert.ok(model.windowedCache && draft.windowedCache);
    for (const K of [2, 5]) {
      const r = await speculativeGenerate(model, draft, prompt, { draftTokens: K, maxNewTokens: 30, sampling: GREEDY, stopTokens: [] });
      assert.deepEqual(r.tokens, expected, `${form}, ${K} draft tokens`);
      assert.ok(r.accepted < r.proposed, `${form}, K=${K}: some proposals are rejected (${r.accepted} of ${r.proposed})`);
    }
    await model.release();
    await draft.release();
  }
  await plain.release();
});

test('a trimmed cache refuses a rollback deeper than it kept, naming the row and what the window needs', { skip }, async () => {
  const model = await DecoderModel.open(await exportedArtifact(sharedModel('gemma3-tiny'), 'fused'), { device: 'cpu' });
  const cache = model.createCache(1, 30);
  await model.forward(cache, [IDS.slice(0, 20)]);
  await model.forward(cache, [[IDS[20]!]]);
  // The step's own token can go (it was appended after the trim); the 12 before it were trimmed to the window's 7.
  cache.truncate(0, 20);
  assert.throws(
    () => cache.truncate(0, 15),
    /row 0 of a sliding-window cache keeps 7 entries; rolling back 5 tokens leaves 2, short of the 7/,
  );
  // With a rollback allowance it keeps that many more, and the same truncation works and decodes as the full pass.
  const roomy = model.createCache(1, 30, { rollback: 5 });
  await model.forward(roomy, [IDS.slice(0, 20)]);
  await model.forward(roomy, [[IDS[20]!]]);
  roomy.truncate(0, 15);
  const step = await model.forward(roomy, [[IDS[15]!]]);
  const full = await model.forward(model.createCache(1, 16), [IDS.slice(0, 16)]);
  assert.ok(maxDiff(step.at(0, 0), full.at(0, 15)) < 1e-4);
  assert.ok(model.session.inputNames.includes(io.attentionMaskLocal));
  await model.release();
});

test("gemma3-tiny tp 2 x pp 2: the ranks trim their sliding layers' caches too, and decode as the unsharded export", {
  skip,
}, async () => {
  const source = sharedModel('gemma3-tiny');
  const out = join(tempDir(), 'sharded');
  await shardModel(source, out, { tp: 2, pp: 2, vocab: 'replicated', attention: 'fused', format: 'onnx' });
  const model = await ShardedModel.open(out, { device: 'cpu' });
  const reference = await DecoderModel.open(await exportedArtifact(source, 'fused'), { device: 'cpu' });
  const W = reference.spec.slidingWindow!;
  const cache = model.createCache(1, IDS.length);
  const full = await reference.forward(reference.createCache(1, IDS.length), [IDS]);
  await model.forward(cache, [IDS.slice(0, 3)]);
  let diff = 0;
  for (let t = 3; t < IDS.length; t++) diff = Math.max(diff, maxDiff((await model.forward(cache, [[IDS[t]!]])).at(0, 0), full.at(0, t)));
  const slots = await model.rankWindowSlots();
  console.log(`# tp 2 x pp 2: trimmed cache slots per rank ${slots.join(', ')}; |sharded decode - full pass| ${diff.toExponential(2)}`);
  // Every rank holds sliding layers (both stages), each within the window.
  assert.ok(
    slots.every((n) => n > 0 && n <= W),
    `slots ${slots.join(', ')}`,
  );
  assert.ok(diff < 1e-4, `sharded decoding differs by ${diff}`);
  cache.release();
  await model.release();
  await reference.release();
});
