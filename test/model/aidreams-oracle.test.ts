// Golden tests against the original implementation (llama2.c run.c) of aidreams-260k:
// greedy ids exactly, logits within 1e-3, for every attention form.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AIDREAMS, NEEDS_SHARED, aidreamsReference, exportedArtifact } from '../support.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { generate } from '../../src/runtime/generate.js';
import { GREEDY } from '../../src/runtime/sampling.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';

for (const form of ['fused', 'standard', 'inplace'] as const) {
  test(`aidreams-260k ${form}: logits match llama2.c within 1e-3`, { skip: NEEDS_SHARED }, async () => {
    const ref = aidreamsReference();
    const model = await DecoderModel.open(await exportedArtifact(AIDREAMS, form), { device: 'cpu' });
    const ids = ref.logits.input_ids;
    const logits = await model.forward(model.createCache(1, ids.length), [ids]);
    let maxDiff = 0;
    for (let t = 0; t < ids.length; t++) {
      const row = logits.at(0, t);
      ref.logits.values[t]!.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(row[i]! - v))));
    }
    console.log(`# aidreams ${form}: max |logit - reference| = ${maxDiff.toExponential(3)} (tolerance 1e-3)`);
    assert.ok(maxDiff < 1e-3, `max diff ${maxDiff}`);
    await model.release();
  });

  test(`aidreams-260k ${form}: greedy ids from <s> and from the prompt equal llama2.c's`, { skip: NEEDS_SHARED }, async () => {
    const ref = aidreamsReference();
    const dir = await exportedArtifact(AIDREAMS, form);
    const model = await DecoderModel.open(dir, { device: 'cpu' });
    const fromBos = await generate(model, [[1]], { maxNewTokens: ref.greedy_from_bos.ids.length, sampling: GREEDY });
    assert.deepEqual(fromBos.tokens[0], ref.greedy_from_bos.ids);
    const promptIds = loadTokenizer(dir).encode(ref.greedy_from_prompt.prompt);
    assert.deepEqual(promptIds, ref.greedy_from_prompt.prompt_ids);
    const fromPrompt = await generate(model, [promptIds], { maxNewTokens: ref.greedy_from_prompt.ids.length, sampling: GREEDY });
    assert.deepEqual(fromPrompt.tokens[0], ref.greedy_from_prompt.ids);
    // Both in one right-padded batch: the padding must not change either row.
    const both = await generate(model, [[1], promptIds], { maxNewTokens: ref.greedy_from_prompt.ids.length, sampling: GREEDY });
    assert.deepEqual(both.tokens[0], ref.greedy_from_bos.ids.slice(0, ref.greedy_from_prompt.ids.length));
    assert.deepEqual(both.tokens[1], ref.greedy_from_prompt.ids);
    await model.release();
  });
}
