// Shard planning: head / column / vocabulary splits, grouped-query KV heads split or replicated,
// stage balancing and --stages parsing, and every bad option refused with one InputError.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../../src/core/errors.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { balanceStages, parseStages, planShard } from '../../src/passes/shard/plan.js';
import { GQA, MHA } from '../support.js';

const mha = readModelSpec(MHA); // 4 heads, 4 kv heads, ffn 80, 2 layers
const gqa = readModelSpec(GQA); // 6 heads, 2 kv heads, ffn 72, 3 layers

test('tp 2 on grouped-query heads splits q, kv heads and MLP columns; ranks are stage * tp + tpRank', () => {
  const plan = planShard(gqa, { tp: 2, pp: 3, vocab: 'replicated' });
  assert.equal(plan.kv, 'split');
  assert.equal(plan.worldSize, 6);
  const r3 = plan.ranks[3]!;
  assert.deepEqual([r3.stage, r3.tpRank], [1, 1]);
  assert.deepEqual(r3.heads, { from: 3, to: 6 });
  assert.deepEqual(r3.kvHeads, { from: 1, to: 2 });
  assert.deepEqual(r3.ffn, { from: 36, to: 72 });
  assert.deepEqual(plan.stages, [
    { from: 0, to: 1 },
    { from: 1, to: 2 },
    { from: 2, to: 3 },
  ]);
});

test('tp larger than the kv heads replicates one kv head per rank, the one its query heads use', () => {
  const plan = planShard(gqa, { tp: 6, vocab: 'replicated' });
  assert.equal(plan.kv, 'replicated');
  assert.deepEqual(
    plan.ranks.map((r) => r.kvHeads.from),
    [0, 0, 0, 1, 1, 1],
  );
});

test('vocabulary split gives each tp rank its rows', () => {
  const plan = planShard(mha, { tp: 4, vocab: 'split' });
  assert.deepEqual(
    plan.ranks.map((r) => [r.vocab.from, r.vocab.to]),
    [
      [0, 80],
      [80, 160],
      [160, 240],
      [240, 320],
    ],
  );
});

test('stages are balanced by parameter bytes: the embedding stage gets fewer layers', () => {
  const spec = { ...mha, numLayers: 12, vocabSize: 32000, hiddenSize: 64, tiedEmbeddings: true };
  const stages = balanceStages(spec, 2);
  assert.equal(stages[0]!.from, 0);
  assert.equal(stages[1]!.to, 12);
  assert.equal(stages[0]!.to, 6, 'tied: embedding and lm_head copy weigh the same, so the split is even');
  const untied = balanceStages({ ...spec, tiedEmbeddings: false, vocabSize: 32000 }, 3);
  assert.deepEqual(
    untied.map((s) => s.to - s.from).reduce((a, b) => a + b, 0),
    12,
  );
});

test('--stages parses ranges and refuses overlap and gaps', () => {
  assert.deepEqual(parseStages('0-5,6-11', 12), [
    { from: 0, to: 6 },
    { from: 6, to: 12 },
  ]);
  assert.deepEqual(parseStages('0,1', 2), [
    { from: 0, to: 1 },
    { from: 1, to: 2 },
  ]);
  assert.throws(
    () => parseStages('0-5,5-11', 12),
    (e: Error) => e instanceof InputError && /overlap at layer 5/.test(e.message),
  );
  assert.throws(
    () => parseStages('0-5,7-11', 12),
    (e: Error) => e instanceof InputError && /layers 6-6 are in no stage/.test(e.message),
  );
  assert.throws(
    () => parseStages('0-5', 12),
    (e: Error) => e instanceof InputError && /layers 6-11 are in no stage/.test(e.message),
  );
  assert.throws(
    () => parseStages('0-12', 12),
    (e: Error) => e instanceof InputError && /layer 12 does not exist/.test(e.message),
  );
  assert.throws(() => parseStages('a-b', 12), InputError);
});

test('bad tp / pp are refused with a message naming the option and the model figure', () => {
  const bad: Array<[Parameters<typeof planShard>[1], RegExp, typeof mha]> = [
    [{ tp: 3, vocab: 'replicated' }, /--tp 3 does not divide the 4 attention heads/, mha],
    [{ tp: 4, vocab: 'replicated' }, /--tp 4 does not divide the 6 attention heads/, gqa],
    [{ tp: 2, vocab: 'replicated' }, /does not divide the intermediate size 81/, { ...mha, intermediateSize: 81 }],
    [{ tp: 3, vocab: 'replicated' }, /key\/value heads can neither be divided/, gqa],
    [{ tp: 1, pp: 3, vocab: 'replicated' }, /--pp 3 is larger than the model's 2 layers/, mha],
    [{ tp: 1, pp: 1, stages: '0,1', vocab: 'replicated' }, /2 stages, but --pp is 1/, mha],
    [{ tp: 3, vocab: 'split' }, /does not divide the vocabulary/, { ...gqa, kvHeads: 3, numHeads: 6, vocabSize: 320 }],
  ];
  for (const [opts, re, spec] of bad)
    assert.throws(
      () => planShard(spec, opts),
      (e: Error) => e instanceof InputError && re.test(e.message),
      String(re),
    );
});
