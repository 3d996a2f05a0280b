// Speculative decoding: greedy output identical to the target alone (fixtures, and aidreams-260k with
// its int4 quantization as the draft); the rejection rule preserves the target's distribution
// (chi-square, on the rule alone and end to end on a fixture); a draft of another vocabulary is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { AIDREAMS, GQA, MHA, NEEDS_SHARED, aidreamsReference, exportedArtifact, tempDir } from '../support.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { generate } from '../../src/runtime/generate.js';
import { GREEDY, seededRandom, type SamplingOptions } from '../../src/runtime/sampling.js';
import { samplingDistribution } from '../../src/runtime/sampling.js';
import { checkDraft, speculativeGenerate, verifyProposal } from '../../src/runtime/speculative.js';
import { quantize } from '../../src/passes/quantize/quantize.js';
import type { CausalLM } from '../../src/runtime/model.js';

const PROMPT = [1, 300, 261, 270, 5, 290];

/** Pearson's chi-square of observed counts against expected probabilities (cells with p > 0). */
function chiSquare(counts: number[], p: ArrayLike<number>, n: number): { chi2: number; df: number } {
  let chi2 = 0;
  let df = -1;
  for (let i = 0; i < p.length; i++) {
    if (p[i]! <= 0) {
      assert.equal(counts[i] ?? 0, 0, `token ${i} has probability 0 but was drawn`);
      continue;
    }
    chi2 += ((counts[i] ?? 0) - n * p[i]!) ** 2 / (n * p[i]!);
    df++;
  }
  return { chi2, df };
}

/** The chi-square value exceeded with probability about 1e-3 (Wilson-Hilferty). */
const critical = (df: number) => df * (1 - 2 / (9 * df) + 3.09 * Math.sqrt(2 / (9 * df))) ** 3;

/** An int4 (round-to-nearest) artifact of a checkpoint: a draft that often agrees with it. */
async function int4(source: string, blockSize: number): Promise<string> {
  const dir = join(tempDir(), 'int4');
  await quantize(source, dir, {
    to: 'int4',
    method: 'rtn',
    blockSize,
    symmetric: true,
    accuracyLevel: 0,
    exclude: [],
    quantizeEmbeddings: false,
    format: 'onnx',
    attention: 'fused',
  });
  return dir;
}

async function targetAlone(model: CausalLM, prompt: number[], n: number): Promise<number[]> {
  return (await generate(model, [prompt], { maxNewTokens: n, sampling: GREEDY, stopTokens: [] })).tokens[0]!;
}

for (const [targetDir, draftDir] of [
  [GQA, MHA],
  [MHA, GQA],
] as const) {
  test(`greedy: ${targetDir.split('/').pop()} drafted by ${draftDir.split('/').pop()} equals the target alone, for K = 1, 3, 6`, async () => {
    for (const form of ['fused', 'standard', 'inplace'] as const) {
      const target = await DecoderModel.open(await exportedArtifact(targetDir, form), { device: 'cpu' });
      const draft = await DecoderModel.open(await exportedArtifact(draftDir, 'fused'), { device: 'cpu' });
      const expected = await targetAlone(target, PROMPT, 24);
      for (const K of [1, 3, 6]) {
        const r = await speculativeGenerate(target, draft, PROMPT, { draftTokens: K, maxNewTokens: 24, sampling: GREEDY, stopTokens: [] });
        assert.deepEqual(r.tokens, expected, `${form}, K=${K}`);
        assert.ok(r.targetPasses < 24 && r.proposed > 0);
      }
    }
  });
}

test('greedy with the target as its own draft accepts every proposal', async () => {
  const model = await DecoderModel.open(await exportedArtifact(MHA, 'fused'), { device: 'cpu' });
  const twin = await DecoderModel.open(await exportedArtifact(MHA, 'fused'), { device: 'cpu' });
  const r = await speculativeGenerate(model, twin, PROMPT, { draftTokens: 4, maxNewTokens: 21, sampling: GREEDY, stopTokens: [] });
  assert.equal(r.accepted, r.proposed);
  assert.equal(r.targetPasses, 4); // 1 token from the prefill, then 4 passes of 4 proposals + 1
  assert.deepEqual(r.tokens, await targetAlone(model, PROMPT, 21));
});

test('the verification rule turns draft proposals into samples of the target distribution (chi-square)', () => {
  const p = Float64Array.from([0.4, 0.3, 0.15, 0.1, 0.05, 0]);
  const q = Float64Array.from([0.1, 0.1, 0.3, 0.2, 0.2, 0.1]);
  const random = seededRandom(11);
  const n = 40000;
  const counts = new Array(p.length).fill(0);
  let accepted = 0;
  for (let i = 0; i < n; i++) {
    let r = random() * 1;
    let x = 0;
    while ((r -= q[x]!) >= 0) x++;
    const v = verifyProposal(x, p, q, random);
    counts[v.token]++;
    if (v.accepted) accepted++;
  }
  const { chi2, df } = chiSquare(counts, p, n);
  console.log(
    `# rule: chi2 ${chi2.toFixed(2)} (df ${df}, critical ${critical(df).toFixed(1)}), acceptance ${(accepted / n).toFixed(3)} (expected ${(1 - 0.5 * p.reduce((a, v, i) => a + Math.abs(v - q[i]!), 0)).toFixed(3)})`,
  );
  assert.ok(chi2 < critical(df));
  assert.ok(Math.abs(accepted / n - 0.5) < 0.01); // sum of min(p, q) = 0.5
});

test('sampling end to end: the first speculated token follows the target distribution given the first (chi-square)', async () => {
  // The other fixture shares no top-4 token with this one: an int4 copy makes a draft that is often right.
  const target = await DecoderModel.open(await exportedArtifact(GQA, 'fused'), { device: 'cpu' });
  const draft = await DecoderModel.open(await int4(GQA, 16), { device: 'cpu' });
  const sampling: SamplingOptions = { temperature: 1, topK: 4, topP: 1, seed: 0 };
  const runs = 600;
  const byFirst = new Map<number, number[]>();
  let accepted = 0;
  for (let seed = 0; seed < runs; seed++) {
    const r = await speculativeGenerate(target, draft, PROMPT, {
      draftTokens: 1,
      maxNewTokens: 3,
      sampling: { ...sampling, seed },
      stopTokens: [],
    });
    const counts = byFirst.get(r.tokens[0]!) ?? [];
    counts[r.tokens[1]!] = (counts[r.tokens[1]!] ?? 0) + 1;
    byFirst.set(r.tokens[0]!, counts);
    accepted += r.accepted;
  }
  let chi2 = 0;
  let df = 0;
  for (const [first, counts] of byFirst) {
    const n = counts.reduce((a, c) => a + (c ?? 0), 0);
    const logits = await target.forward(target.createCache(1, PROMPT.length + 1), [[...PROMPT, first]]);
    const c = chiSquare(counts, samplingDistribution(logits.at(0, PROMPT.length), sampling), n);
    chi2 += c.chi2;
    df += c.df;
  }
  console.log(
    `# end to end: chi2 ${chi2.toFixed(2)} (df ${df}, critical ${critical(df).toFixed(1)}), ${byFirst.size} first tokens, acceptance ${(accepted / runs).toFixed(3)}`,
  );
  assert.ok(chi2 < critical(df));
  assert.ok(accepted > 0 && accepted < runs, 'both branches of the rule ran');
});

test('a draft whose vocabulary differs is refused', () => {
  const model = (vocabSize: number) => ({ spec: { vocabSize } }) as CausalLM;
  assert.throws(() => checkDraft(model(512), model(320)), { name: 'InputError', message: /vocabulary has 320 tokens, the target's 512/ });
});

test('aidreams-260k: greedy with its int4 quantization as the draft equals llama2.c', { skip: NEEDS_SHARED }, async () => {
  const ref = aidreamsReference();
  const target = await DecoderModel.open(await exportedArtifact(AIDREAMS, 'fused'), { device: 'cpu' });
  const draft = await DecoderModel.open(await int4(AIDREAMS, 32), { device: 'cpu' });
  const { prompt_ids, ids } = ref.greedy_from_prompt;
  const r = await speculativeGenerate(target, draft, prompt_ids, {
    draftTokens: 4,
    maxNewTokens: ids.length,
    sampling: GREEDY,
    stopTokens: [],
  });
  console.log(
    `# aidreams int4 draft: acceptance ${(r.accepted / r.proposed).toFixed(3)}, ${(r.tokens.length - 1) / r.targetPasses} tokens per target pass`,
  );
  assert.deepEqual(r.tokens, ids);
});
