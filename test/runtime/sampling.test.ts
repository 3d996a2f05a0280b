import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sampler, argmax, seededRandom } from '../../src/runtime/sampling.js';

const logits = Float32Array.from([0.1, 2.0, 1.5, -1, 0.5]);

test('greedy picks the argmax', () => {
  assert.equal(new Sampler({ temperature: 0, topK: 0, topP: 1, seed: 1 }).next(logits), 1);
  assert.equal(argmax(logits), 1);
});

test('the same seed reproduces the same samples; another seed differs', () => {
  const draw = (seed: number) => {
    const s = new Sampler({ temperature: 1, topK: 0, topP: 1, seed });
    return Array.from({ length: 50 }, () => s.next(logits));
  };
  assert.deepEqual(draw(7), draw(7));
  assert.notDeepEqual(draw(7), draw(8));
});

test('top-k keeps only the k most likely tokens', () => {
  const s = new Sampler({ temperature: 5, topK: 2, topP: 1, seed: 3 });
  const seen = new Set(Array.from({ length: 400 }, () => s.next(logits)));
  assert.deepEqual([...seen].sort(), [1, 2]);
});

test('top-p keeps the smallest set reaching p', () => {
  // softmax of [0, 0, -100]: two tokens of 0.5 each; p = 0.4 keeps only the first of them.
  const s = new Sampler({ temperature: 1, topK: 0, topP: 0.4, seed: 3 });
  const l = Float32Array.from([0, -0.0001, -100]);
  const seen = new Set(Array.from({ length: 200 }, () => s.next(l)));
  assert.deepEqual([...seen], [0]);
});

test('sampling frequencies follow softmax(logits / T)', () => {
  const s = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: 11 });
  const l = Float32Array.from([Math.log(0.6), Math.log(0.3), Math.log(0.1)]);
  const counts = [0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[s.next(l)]!++;
  // Each frequency within 5 standard errors of its probability.
  [0.6, 0.3, 0.1].forEach((p, i) =>
    assert.ok(Math.abs(counts[i]! / n - p) < 5 * Math.sqrt((p * (1 - p)) / n), `token ${i}: ${counts[i]! / n}`),
  );
});

test('seededRandom is uniform on [0, 1)', () => {
  const r = seededRandom(42);
  let sum = 0;
  for (let i = 0; i < 10000; i++) {
    const x = r();
    assert.ok(x >= 0 && x < 1);
    sum += x;
  }
  assert.ok(Math.abs(sum / 10000 - 0.5) < 0.02);
});
