// Qwen2, Qwen3, SmolLM3, Phi-3 and Gemma 3 against ../shared/models/*-tiny/reference.json, in every attention form:
// logits within 1e-3, greedy ids exactly, cached decoding equal to the full pass (past gemma3-tiny's window of 8),
// padding inert. gemma3-tiny's `logits` are an independent numpy float64 forward with Hugging Face semantics, not
// llama.cpp's: llama.cpp evaluates GELU through an fp16 lookup table, so its own logits (`logits_llamacpp`) sit about
// 2.2e-3 from Hugging Face's; llmopt follows Hugging Face (exact tanh-GELU) and prints its distance to llama.cpp's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TINY_MODELS, exportedArtifact, needsSharedModel, sharedModel, tinyReference } from '../support.js';
import { DecoderModel, type StepLogits } from '../../src/runtime/decoder.js';
import { generate } from '../../src/runtime/generate.js';
import { GREEDY } from '../../src/runtime/sampling.js';
import { gemma3MultimodalCheckpoint } from './gemma3-multimodal.js';

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const full = (model: DecoderModel, ids: number[]): Promise<StepLogits> => model.forward(model.createCache(1, ids.length), [ids]);

/** llama.cpp's own logits where the reference's `logits` are not llama.cpp's (gemma3-tiny). */
interface LlamaCppLogits {
  logits_llamacpp?: { values: number[][] };
}

for (const name of [...TINY_MODELS, 'gemma3-tiny']) {
  for (const form of ['fused', 'standard', 'inplace'] as const) {
    const skip = needsSharedModel(name);
    const open = async () => DecoderModel.open(await exportedArtifact(sharedModel(name), form), { device: 'cpu' });

    test(`${name} ${form}: logits match the reference within 1e-3`, { skip }, async () => {
      const ref = tinyReference(name) as ReturnType<typeof tinyReference> & LlamaCppLogits;
      const model = await open();
      const logits = await full(model, ref.logits.input_ids);
      let worst = 0;
      ref.logits.values.forEach((row, t) => (worst = Math.max(worst, maxDiff(logits.at(0, t), row))));
      const what = ref.logits_llamacpp ? 'numpy float64 (Hugging Face semantics)' : 'llama.cpp';
      console.log(`# ${name} ${form}: max |logit - ${what}| = ${worst.toExponential(3)} (tolerance 1e-3)`);
      if (ref.logits_llamacpp) {
        let cpp = 0;
        ref.logits_llamacpp.values.forEach((row, t) => (cpp = Math.max(cpp, maxDiff(logits.at(0, t), row))));
        console.log(`# ${name} ${form}: max |logit - llama.cpp (fp16 GELU table)| = ${cpp.toExponential(3)}`);
      }
      assert.ok(worst < 1e-3, `max diff ${worst}`);
      await model.release();
    });

    test(`${name} ${form}: the greedy continuation of the prompt equals llama.cpp's`, { skip }, async () => {
      const ref = tinyReference(name);
      const model = await open();
      const { prompt_ids: prompt, ids } = ref.greedy_from_prompt;
      const r = await generate(model, [prompt], { maxNewTokens: ids.length, sampling: GREEDY, stopTokens: [] });
      assert.deepEqual(r.tokens[0], ids);
      await model.release();
    });

    test(`${name} ${form}: token-by-token decoding through the cache equals the full pass`, { skip }, async () => {
      // 20 tokens: past gemma3-tiny's sliding window of 8, so local layers drop keys while decoding.
      const ids = tinyReference(name).logits.input_ids.slice(0, 20);
      const model = await open();
      const whole = await full(model, ids);
      const cache = model.createCache(1, ids.length);
      const prefill = await model.forward(cache, [ids.slice(0, 4)]);
      let worst = 0;
      for (let t = 0; t < 4; t++) worst = Math.max(worst, maxDiff(prefill.at(0, t), whole.at(0, t)));
      for (let t = 4; t < ids.length; t++)
        worst = Math.max(worst, maxDiff((await model.forward(cache, [[ids[t]!]])).at(0, 0), whole.at(0, t)));
      assert.ok(worst < 1e-4, `max diff ${worst}`);
      await model.release();
    });

    test(`${name} ${form}: a padded batch equals each prompt alone, through prefill and decode`, { skip }, async () => {
      const ids = tinyReference(name).logits.input_ids;
      const prompts = [ids.slice(0, 13), ids.slice(20, 25)];
      const next = [[ids[30]!], [ids[31]!]];
      const model = await open();
      const cache = model.createCache(2, 16);
      const batched = await model.forward(cache, prompts);
      const decoded = await model.forward(cache, next);
      for (let b = 0; b < 2; b++) {
        const alone = await full(model, [...prompts[b]!, next[b]![0]!]);
        for (let t = 0; t < prompts[b]!.length; t++) assert.ok(maxDiff(batched.at(b, t), alone.at(0, t)) < 1e-4, `row ${b} position ${t}`);
        assert.ok(maxDiff(decoded.at(b, 0), alone.at(0, prompts[b]!.length)) < 1e-4, `row ${b} decode step`);
      }
      await model.release();
    });
  }
}

test('gemma3 (Gemma3ForConditionalGeneration): the text model is read from text_config and language_model.*', {
  skip: needsSharedModel('gemma3-tiny'),
}, async () => {
  const dir = await gemma3MultimodalCheckpoint();
  const ref = tinyReference('gemma3-tiny');
  const model = await DecoderModel.open(await exportedArtifact(dir, 'fused'), { device: 'cpu' });
  const logits = await full(model, ref.logits.input_ids);
  let worst = 0;
  ref.logits.values.forEach((row, t) => (worst = Math.max(worst, maxDiff(logits.at(0, t), row))));
  assert.ok(worst < 1e-3, `max diff ${worst}`);
  await model.release();
});
