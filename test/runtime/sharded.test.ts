// The sharded runtime against the unsharded model: logits at every real (unpadded) position agree
// through a padded batch prefill and cached decode steps, greedy generation is identical, and a rank
// folder that is missing or from another shard run is refused on open.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../src/core/errors.js';
import { shardModel, type ShardOptions } from '../../src/passes/shard/shard.js';
import { ShardedModel } from '../../src/runtime/sharded/model.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { generate } from '../../src/runtime/generate.js';
import { writeSyntheticLlama, type LlamaShape } from '../../src/model/synthetic.js';
import { GEMMA2, writeCheckpoint } from '../model/window-checkpoints.js';
import {
  AIDREAMS,
  GQA,
  MHA,
  NEEDS_SHARED,
  LLAMA3_SHAPE,
  TINY_MODELS,
  exportedArtifact,
  needsSharedModel,
  sharedModel,
  tempDir,
} from '../support.js';

const PROMPTS = [
  [1, 300, 261, 270, 5, 290, 280, 301],
  [1, 44, 260],
  [1, 270, 271, 272, 273],
];
const TOL = 1e-4;

async function sharded(source: string, opts: Partial<ShardOptions>): Promise<string> {
  const out = join(tempDir(), 'sharded');
  await shardModel(source, out, { tp: 1, vocab: 'replicated', attention: 'fused', format: 'onnx', ...opts });
  return out;
}

/** Max |difference| over real positions: prefill of a padded batch, then three decode steps. */
async function compare(reference: DecoderModel, model: ShardedModel): Promise<number> {
  const a = reference.createCache(PROMPTS.length, 16);
  const b = model.createCache(PROMPTS.length, 16);
  let worst = 0;
  let rows = PROMPTS;
  for (let step = 0; step < 4; step++) {
    const x = await reference.forward(a, rows);
    const y = await model.forward(b, rows);
    rows.forEach((r, i) => {
      for (let s = 0; s < r.length; s++) {
        const p = x.at(i, s);
        const q = y.at(i, s);
        for (let v = 0; v < p.length; v++) worst = Math.max(worst, Math.abs(p[v]! - q[v]!));
      }
    });
    rows = rows.map((_, i) => [10 + step + i]);
  }
  return worst;
}

const CASES: Array<[string, string, Partial<ShardOptions>]> = [
  ['mha', MHA, { tp: 2 }],
  ['mha', MHA, { tp: 4, attention: 'standard' }],
  ['mha', MHA, { pp: 2 }],
  ['mha', MHA, { tp: 2, pp: 2, vocab: 'split' }],
  ['gqa', GQA, { tp: 2, pp: 3 }],
  ['gqa', GQA, { tp: 6, attention: 'standard' }], // 2 kv heads replicated over 6 ranks
  ['gqa', GQA, { tp: 2, vocab: 'split', attention: 'standard' }],
];

for (const [name, dir, opts] of CASES) {
  const label = `${name} tp ${opts.tp ?? 1} pp ${opts.pp ?? 1}${opts.vocab === 'split' ? ' vocab split' : ''} (${opts.attention ?? 'fused'})`;
  test(`${label}: logits equal the unsharded model's through prefill and decode`, async () => {
    const reference = await DecoderModel.open(await exportedArtifact(dir, opts.attention ?? 'fused'), { device: 'cpu' });
    const model = await ShardedModel.open(await sharded(dir, opts), { device: 'cpu' });
    try {
      const worst = await compare(reference, model);
      console.log(`# ${label}: max |sharded - unsharded| = ${worst.toExponential(3)}`);
      assert.ok(worst < TOL, `max diff ${worst}`);
    } finally {
      await model.release();
      await reference.release();
    }
  });
}

for (const [tp, pp] of [
  [2, 1],
  [4, 1],
  [1, 2],
  [2, 2],
] as const) {
  test(`aidreams-260k tp ${tp} pp ${pp}: logits and greedy generation equal the unsharded model's`, { skip: NEEDS_SHARED }, async () => {
    const reference = await DecoderModel.open(await exportedArtifact(AIDREAMS, 'fused'), { device: 'cpu' });
    const model = await ShardedModel.open(await sharded(AIDREAMS, { tp, pp }), { device: 'cpu' });
    try {
      const worst = await compare(reference, model);
      console.log(`# aidreams tp ${tp} pp ${pp}: max |sharded - unsharded| = ${worst.toExponential(3)}`);
      assert.ok(worst < TOL, `max diff ${worst}`);
      const sampling = { temperature: 0, topK: 0, topP: 1, seed: 0 };
      const want = await generate(reference, [[1], [1, 403, 407]], { maxNewTokens: 40, sampling });
      const got = await generate(model, [[1], [1, 403, 407]], { maxNewTokens: 40, sampling });
      assert.deepEqual(got.tokens, want.tokens);
    } finally {
      await model.release();
      await reference.release();
    }
  });
}

// Qwen2 (q/k/v biases split with their rows, o_proj unbiased), Qwen3 (q/k norms over head_dim, whole on every
// rank), SmolLM3 (layer 3 without rotary, on the second stage under pp 2) and Gemma 3 (its post-attention and
// post-feedforward norms applied to the summed shares, across the stage boundary too); tp 4 replicates 2 kv heads.
for (const name of [...TINY_MODELS, 'gemma3-tiny']) {
  for (const opts of [{ tp: 2 }, { tp: 2, pp: 2 }, { tp: 2, pp: 2, attention: 'standard' }, { tp: 4, vocab: 'split' }] as Array<
    Partial<ShardOptions>
  >) {
    const label = `${name} tp ${opts.tp} pp ${opts.pp ?? 1}${opts.vocab === 'split' ? ' vocab split' : ''} (${opts.attention ?? 'fused'})`;
    test(`${label}: logits and greedy generation equal the unsharded export's`, { skip: needsSharedModel(name) }, async () => {
      const dir = sharedModel(name);
      const reference = await DecoderModel.open(await exportedArtifact(dir, opts.attention ?? 'fused'), { device: 'cpu' });
      const model = await ShardedModel.open(await sharded(dir, opts), { device: 'cpu' });
      try {
        const worst = await compare(reference, model);
        console.log(`# ${label}: max |sharded - unsharded| = ${worst.toExponential(3)}`);
        assert.ok(worst < TOL, `max diff ${worst}`);
        const sampling = { temperature: 0, topK: 0, topP: 1, seed: 0 };
        const prompts = [[510], [510, 40, 41, 42]];
        const want = await generate(reference, prompts, { maxNewTokens: 24, sampling });
        const got = await generate(model, prompts, { maxNewTokens: 24, sampling });
        assert.deepEqual(got.tokens, want.tokens);
      } finally {
        await model.release();
        await reference.release();
      }
    });
  }
}

test("gemma2 (soft-caps, alternating windows) tp 2 and tp 2 pp 2: logits equal the unsharded export's", async () => {
  const dir = await writeCheckpoint({ ...GEMMA2, num_attention_heads: 4, num_key_value_heads: 2 });
  const reference = await DecoderModel.open(await exportedArtifact(dir, 'fused'), { device: 'cpu' });
  try {
    for (const opts of [{ tp: 2 }, { tp: 2, pp: 2 }]) {
      const model = await ShardedModel.open(await sharded(dir, opts), { device: 'cpu' });
      const worst = await compare(reference, model);
      await model.release();
      console.log(`# gemma2 tp ${opts.tp} pp ${opts.pp ?? 1}: max |sharded - unsharded| = ${worst.toExponential(3)}`);
      assert.ok(worst < TOL, `max diff ${worst}`);
    }
  } finally {
    await reference.release();
  }
});

// Llama 3.x shapes (synthetic): SmolLM2's 9 heads / 3 kv heads, tied, llama3 rope scaling, split over tp 3;
// head_dim 8, which the fused form rotates outside GroupQueryAttention, over tp 2 x pp 2.

for (const [name, shape, opts] of [
  ['smollm2-heads-llama3-tied', LLAMA3_SHAPE, { tp: 3 }],
  ['smollm2-heads-llama3-tied', LLAMA3_SHAPE, { tp: 3, pp: 2, attention: 'standard' }],
  [
    'head-dim-8',
    { ...LLAMA3_SHAPE, hidden_size: 32, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64 },
    { tp: 2, pp: 2 },
  ],
] as Array<[string, LlamaShape, Partial<ShardOptions>]>) {
  const label = `${name} tp ${opts.tp} pp ${opts.pp ?? 1} (${opts.attention ?? 'fused'})`;
  test(`${label}: logits and greedy generation equal the unsharded export's`, async () => {
    const root = tempDir();
    await writeSyntheticLlama(root, { name, config: shape, shards: 1 });
    const dir = join(root, name);
    const reference = await DecoderModel.open(await exportedArtifact(dir, opts.attention ?? 'fused'), { device: 'cpu' });
    const model = await ShardedModel.open(await sharded(dir, opts), { device: 'cpu' });
    try {
      const worst = await compare(reference, model);
      console.log(`# ${label}: max |sharded - unsharded| = ${worst.toExponential(3)}`);
      assert.ok(worst < TOL, `max diff ${worst}`);
      const sampling = { temperature: 0, topK: 0, topP: 1, seed: 0 };
      const want = await generate(reference, [[1], [1, 40, 41]], { maxNewTokens: 16, sampling });
      assert.deepEqual((await generate(model, [[1], [1, 40, 41]], { maxNewTokens: 16, sampling })).tokens, want.tokens);
    } finally {
      await model.release();
      await reference.release();
    }
  });
}

test('released caches are freed in the rank workers: creating and releasing many leaves none behind', async () => {
  const model = await ShardedModel.open(await sharded(MHA, { tp: 2, pp: 2 }), { device: 'cpu' });
  try {
    for (let k = 0; k < 25; k++) {
      const cache = model.createCache(2, 8);
      if (k % 5 === 0) await model.forward(cache, [[1, 2, 3], [4]]);
      cache.release();
    }
    const held = model.createCache(1, 4);
    assert.deepEqual(await model.rankCacheCounts(), [1, 1, 1, 1]);
    held.release();
    held.release(); // twice is harmless
    assert.deepEqual(await model.rankCacheCounts(), [0, 0, 0, 0]);
  } finally {
    await model.release();
  }
});

test('opening refuses a missing rank folder and one from another shard run', async () => {
  const a = await sharded(MHA, { tp: 2 });
  const b = await sharded(MHA, { tp: 2 });
  const mixed = join(tempDir(), 'mixed');
  cpSync(a, mixed, { recursive: true });
  rmSync(join(mixed, 'rank1'), { recursive: true });
  await assert.rejects(
    ShardedModel.open(mixed, { device: 'cpu' }),
    (e: Error) => e instanceof InputError && /rank 1 folder is missing/.test(e.message),
  );
  cpSync(join(b, 'rank1'), join(mixed, 'rank1'), { recursive: true });
  await assert.rejects(
    ShardedModel.open(mixed, { device: 'cpu' }),
    (e: Error) => e instanceof InputError && /comes from another shard run/.test(e.message),
  );
  cpSync(join(a, 'rank1'), join(mixed, 'rank1'), { recursive: true });
  writeFileSync(join(mixed, 'rank1', 'head.onnx.data'), 'tampered');
  await assert.rejects(
    ShardedModel.open(mixed, { device: 'cpu' }),
    (e: Error) => e instanceof InputError && /sha256 does not match/.test(e.message),
  );
});
