// Prompt-lookup drafting: the n-gram proposer; greedy output identical to the target alone (fixtures); high acceptance
// when the prompt holds the continuation; sampled output still follows the target (chi-square); the CLI's --draft.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, MHA, exportedArtifact, runCli, tempDir } from '../support.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { generate } from '../../src/runtime/generate.js';
import { GREEDY, samplingDistribution } from '../../src/runtime/sampling.js';
import { PROMPT_LOOKUP, lookupProposals } from '../../src/runtime/prompt-lookup.js';
import { speculativeGenerate } from '../../src/runtime/speculative.js';
import { SpeculativeQueue } from '../../src/runtime/speculative-queue.js';
import type { Completion } from '../../src/runtime/scheduler.js';
import { StepLogits, type CausalLM, type SequenceState } from '../../src/runtime/model.js';
import type { DecoderSpec } from '../../src/core/spec.js';

test('lookupProposals: the tokens after the latest match of the longest recurring n-gram', () => {
  // ... 7 8 9 recurs at 1 and at 6: the latest (6) is followed by 4 5.
  assert.deepEqual(lookupProposals([0, 7, 8, 9, 1, 2, 7, 8, 9, 4, 5, 3, 7, 8, 9], 3), [4, 5, 3]);
  // Only the last token recurs: the 1-gram match.
  assert.deepEqual(lookupProposals([5, 6, 1, 2, 6], 2), [1, 2]);
  // A continuation is cut at the end of the text; nothing recurs: no proposals.
  assert.deepEqual(lookupProposals([3, 4, 3], 5), [4, 3]);
  assert.deepEqual(lookupProposals([1, 2, 3, 4], 4), []);
  assert.deepEqual(lookupProposals([1, 2, 3, 4], 4, { maxNgram: 2, minNgram: 2 }), []);
});

const VOCAB = 16;
const DOC = [3, 9, 4, 12, 7, 7, 2, 15, 11, 5, 8, 6, 14, 10, 13];

/** The token history of each row: all a document reader's cache needs. */
class Rows implements SequenceState {
  readonly rows: number[][];
  constructor(readonly batch: number) {
    this.rows = Array.from({ length: batch }, () => []);
  }
  get lengths(): number[] {
    return this.rows.map((r) => r.length);
  }
  truncate(row: number, length: number): void {
    this.rows[row]!.splice(length);
  }
  adoptRow(): void {
    throw new Error('not supported');
  }
  release(): void {}
}

/**
 * A model that reads a fixed document: after n tokens its most likely next token is DOC[n % DOC.length] (logit 4 above
 * a spread that depends on the last token), so a prompt holding the document holds its continuation.
 */
const documentReader: CausalLM<Rows> = {
  spec: { vocabSize: VOCAB, maxPositions: 256, eosTokenIds: [] } as unknown as DecoderSpec,
  device: 'cpu',
  description: 'document reader',
  capabilities: { adoptRows: false },
  createCache: (batch) => new Rows(batch),
  async forward(cache, input) {
    const seqLen = Math.max(...input.map((r) => r.length));
    const data = new Float32Array(input.length * seqLen * VOCAB);
    input.forEach((row, b) => {
      const seq = cache.rows[b]!;
      row.forEach((id, s) => {
        seq.push(id);
        const l = data.subarray((b * seqLen + s) * VOCAB, (b * seqLen + s + 1) * VOCAB);
        for (let i = 0; i < VOCAB; i++) l[i] = ((i * 7 + id) % 5) * 0.3;
        l[DOC[seq.length % DOC.length]!]! += 4;
      });
    });
    return new StepLogits(data, input.length, seqLen, VOCAB);
  },
  release: async () => {},
};

test('a prompt holding the continuation: greedy lookup accepts nearly every proposal, output as the target alone', async () => {
  const prompt = [...DOC, ...DOC.slice(0, 4)];
  const alone = await generate(documentReader, [prompt], { maxNewTokens: 40, sampling: GREEDY, stopTokens: [] });
  const s = await speculativeGenerate(documentReader, PROMPT_LOOKUP, prompt, { draftTokens: 6, maxNewTokens: 40, sampling: GREEDY });
  assert.deepEqual(s.tokens, alone.tokens[0]);
  assert.ok(s.accepted / s.proposed > 0.95, `acceptance ${s.accepted}/${s.proposed}`);
  assert.ok(s.targetPasses <= 7, `${s.targetPasses} target passes for 40 tokens`);
});

test('sampling with lookup proposals: the first drafted token follows the target distribution (chi-square)', async () => {
  // The proposal for the token after the prompt is DOC[4] (looked up); the target's own distribution must come out.
  const prompt = [...DOC, ...DOC.slice(0, 4)];
  const sampling = { temperature: 1, topK: 0, topP: 1, seed: 0 };
  const ctx = documentReader.createCache(1, 64);
  const first = await documentReader.forward(ctx, [prompt]);
  const p1 = samplingDistribution(first.at(0, prompt.length - 1), sampling);
  const counts: number[] = [];
  // The first token is drawn by the target; condition on the likeliest one and look at the second (the first drafted).
  const want = DOC[prompt.length % DOC.length]!;
  let n = 0;
  let p2: Float64Array | null = null;
  for (let seed = 0; n < 1500; seed++) {
    const s = await speculativeGenerate(documentReader, PROMPT_LOOKUP, prompt, {
      draftTokens: 3,
      maxNewTokens: 3,
      sampling: { ...sampling, seed },
      stopTokens: [],
    });
    if (s.tokens[0] !== want) continue;
    if (!p2) {
      const c = documentReader.createCache(1, 64);
      p2 = samplingDistribution((await documentReader.forward(c, [[...prompt, want]])).at(0, prompt.length), sampling);
    }
    counts[s.tokens[1]!] = (counts[s.tokens[1]!] ?? 0) + 1;
    n++;
  }
  assert.ok(p1[want]! > 0.5);
  let chi2 = 0;
  for (let i = 0; i < VOCAB; i++) chi2 += ((counts[i] ?? 0) - n * p2![i]!) ** 2 / (n * p2![i]!);
  // 15 degrees of freedom: exceeded with probability 1e-3 at 37.7.
  console.log(`# lookup sampling: chi-square ${chi2.toFixed(1)} over ${n} draws (15 dof, 1e-3 critical 37.7)`);
  assert.ok(chi2 < 37.7, `chi-square ${chi2.toFixed(1)}`);
});

for (const dir of [MHA, GQA]) {
  test(`greedy: ${dir.split('/').at(-1)} with prompt lookup equals the target alone`, async () => {
    const model = await DecoderModel.open(await exportedArtifact(dir, 'fused'), { device: 'cpu', threads: 1 });
    const prompt = [1, 300, 261, 270, 5, 290, 300, 261, 270];
    const alone = await generate(model, [prompt], { maxNewTokens: 24, sampling: GREEDY, stopTokens: [] });
    for (const k of [1, 4]) {
      const s = await speculativeGenerate(model, PROMPT_LOOKUP, prompt, {
        draftTokens: k,
        maxNewTokens: 24,
        sampling: GREEDY,
        stopTokens: [],
      });
      assert.deepEqual(s.tokens, alone.tokens[0], `K = ${k}`);
      assert.ok(s.proposed > 0);
    }
    await model.release();
  });
}

test('generate --draft prompt-lookup: the ids of plain greedy, with acceptance reported', async () => {
  const artifact = await exportedArtifact(MHA, 'fused');
  const args = ['generate', artifact, '-p', 'the cat and the cat and the', '-n', '16', '--json'];
  const plain = runCli(args);
  const drafted = runCli([...args, '--draft', 'prompt-lookup', '--draft-tokens', '3']);
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(drafted.code, 0, drafted.stderr);
  const [a, b] = [JSON.parse(plain.stdout), JSON.parse(drafted.stdout)];
  assert.deepEqual(b.outputs[0].ids, a.outputs[0].ids);
  assert.equal(b.speculative.draftTokens, 3);
  assert.ok(b.speculative.acceptanceRate >= 0 && b.speculative.acceptanceRate <= 1);
});

test("serve's queue with prompt lookup streams the target's greedy tokens", async () => {
  const prompt = [...DOC, ...DOC.slice(0, 2)];
  const alone = await generate(documentReader, [prompt], { maxNewTokens: 20, sampling: GREEDY, stopTokens: [] });
  const queue = new SpeculativeQueue(documentReader, PROMPT_LOOKUP, { draftTokens: 4 });
  const streamed: number[] = [];
  const done = await new Promise<Completion>((resolve, reject) =>
    queue.submit({ prompt, maxNewTokens: 20 }, { onToken: (id) => streamed.push(id), onDone: (c, e) => (e ? reject(e) : resolve(c)) }),
  );
  await queue.close();
  assert.deepEqual(done.tokens, alone.tokens[0]);
  assert.deepEqual(streamed, alone.tokens[0]);
});

test('bench --draft prompt-lookup: speculative figures with the same output as plain decoding', async () => {
  const artifact = await exportedArtifact(MHA, 'fused');
  const file = join(tempDir(), 'bench.json');
  const r = runCli(['bench', artifact, '--draft', 'prompt-lookup', '--prompt-len', '16', '--gen-len', '8', '--reps', '1', '--json', file]);
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(readFileSync(file, 'utf8')).speculative[0];
  assert.equal(s.draft, 'prompt-lookup');
  assert.equal(s.identical, true);
  assert.ok(s.tokensPerTargetPass.median >= 1);
});
