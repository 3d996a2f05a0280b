// Llama 3.x shapes on synthetic checkpoints (model/synthetic.ts), in every attention form: SmolLM2-135M's odd
// head counts (9 heads / 3 kv heads at hidden 576, head_dim 64) with tied embeddings and llama3 rope scaling,
// and head_dim 8, which GroupQueryAttention cannot rotate itself (the fused form rotates before the op).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { LLAMA3_SHAPE, exportedArtifact, tempDir } from '../support.js';
import { writeSyntheticLlama, type LlamaShape } from '../../src/model/synthetic.js';
import { DecoderModel, type StepLogits } from '../../src/runtime/decoder.js';
import { ATTENTION_FORMS } from '../../src/core/io.js';

const SHAPES: Array<[string, LlamaShape]> = [
  ['smollm2-heads-llama3-tied', LLAMA3_SHAPE],
  [
    'head-dim-8',
    { ...LLAMA3_SHAPE, hidden_size: 32, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64, rope_scaling: null },
  ],
];

const dirs = new Map<string, Promise<string>>();
function checkpoint(name: string, shape: LlamaShape): Promise<string> {
  if (!dirs.has(name)) {
    const root = tempDir();
    dirs.set(
      name,
      writeSyntheticLlama(root, { name, config: shape, shards: 1 }).then(() => join(root, name)),
    );
  }
  return dirs.get(name)!;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
const full = (model: DecoderModel, ids: number[]): Promise<StepLogits> => model.forward(model.createCache(1, ids.length), [ids]);
const PROMPTS = [
  [1, 300, 261, 270, 5, 290, 280, 301, 262, 263, 310, 299, 44, 45],
  [1, 44, 260, 319, 17],
];

for (const [name, shape] of SHAPES) {
  for (const form of ATTENTION_FORMS) {
    test(`${name} ${form}: exports; equals the standard form, cached decoding equals the full pass, padding is inert`, async () => {
      const source = await checkpoint(name, shape);
      const model = await DecoderModel.open(await exportedArtifact(source, form), { device: 'cpu' });
      const reference = await DecoderModel.open(await exportedArtifact(source, 'standard'), { device: 'cpu' });
      const ids = PROMPTS[0]!;
      const whole = await full(model, ids);
      const against = maxDiff(whole.data, (await full(reference, ids)).data);
      console.log(`# ${name}: max |${form} - standard| = ${against.toExponential(3)}`);
      assert.ok(against < 1e-4, `max diff against standard ${against}`);

      const cache = model.createCache(1, ids.length);
      const prefill = await model.forward(cache, [ids.slice(0, 3)]);
      let worst = 0;
      for (let t = 0; t < 3; t++) worst = Math.max(worst, maxDiff(prefill.at(0, t), whole.at(0, t)));
      for (let t = 3; t < ids.length; t++)
        worst = Math.max(worst, maxDiff((await model.forward(cache, [[ids[t]!]])).at(0, 0), whole.at(0, t)));
      assert.ok(worst < 1e-4, `cached decoding: max diff ${worst}`);

      const batch = model.createCache(2, 20);
      const batched = await model.forward(batch, PROMPTS);
      const decoded = await model.forward(batch, [[7], [8]]);
      for (let b = 0; b < 2; b++) {
        const p = PROMPTS[b]!;
        const alone = await full(model, [...p, 7 + b]);
        for (let t = 0; t < p.length; t++) assert.ok(maxDiff(batched.at(b, t), alone.at(0, t)) < 1e-4, `row ${b} position ${t}`);
        assert.ok(maxDiff(decoded.at(b, 0), alone.at(0, p.length)) < 1e-4, `row ${b} decode step`);
      }
      await model.release();
      await reference.release();
    });
  }
}
