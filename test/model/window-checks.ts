// The runtime checks the sliding-window tests share: decoding token by token through the cache past the
// window equals the full pass, and a right-padded batch (rows longer and shorter than the window) equals
// each row alone, through prefill and one decode step.
import assert from 'node:assert/strict';
import type { DecoderModel, StepLogits } from '../../src/runtime/decoder.js';

export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** The logits of `ids` in one pass from an empty cache. */
export const fullPass = (model: DecoderModel, ids: number[]): Promise<StepLogits> => model.forward(model.createCache(1, ids.length), [ids]);

/** Asserts cached decoding of `ids` (at least 22 tokens) equals `logits`, its full pass; returns the largest difference. */
export async function checkCachedDecoding(model: DecoderModel, ids: number[], logits: StepLogits): Promise<number> {
  const cache = model.createCache(1, ids.length);
  const prefill = await model.forward(cache, [ids.slice(0, 3)]);
  let step = 0;
  for (let t = 0; t < 3; t++) step = Math.max(step, maxDiff(prefill.at(0, t), logits.at(0, t)));
  for (let t = 3; t < ids.length; t++) step = Math.max(step, maxDiff((await model.forward(cache, [[ids[t]!]])).at(0, 0), logits.at(0, t)));
  assert.ok(step < 1e-4, `cached decoding differs by ${step}`);
  return step;
}

/** Asserts a right-padded batch of two rows cut from `ids` equals each row alone, prefill and a decode step. */
export async function checkPaddedBatch(model: DecoderModel, ids: number[]): Promise<void> {
  const prompts = [ids.slice(0, 13), ids.slice(15, 19)];
  const batch = model.createCache(2, 16);
  const batched = await model.forward(batch, prompts);
  const decoded = await model.forward(batch, [[ids[20]!], [ids[21]!]]);
  for (let b = 0; b < 2; b++) {
    const alone = await fullPass(model, [...prompts[b]!, ids[20 + b]!]);
    for (let t = 0; t < prompts[b]!.length; t++) assert.ok(maxDiff(batched.at(b, t), alone.at(0, t)) < 1e-4, `row ${b} position ${t}`);
    assert.ok(maxDiff(decoded.at(b, 0), alone.at(0, prompts[b]!.length)) < 1e-4, `row ${b} decode step`);
  }
}
