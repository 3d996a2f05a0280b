// synth --grow-from: the grown checkpoint, exported and run, gives the source's logits (noise 0) within 1e-4, with new
// heads, a changed head_dim (rotary kept), grouped kv heads, a wider MLP and new layers; noise moves them a little.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { growModel, mapHeads, orthonormalColumns } from '../../src/model/grow.js';
import { exportModel } from '../../src/passes/export.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { writeSyntheticLlama } from '../../src/model/synthetic.js';
import { synthSpec } from '../../src/model/synthetic-shapes.js';
import { AIDREAMS, MHA, tempDir } from '../support.js';

// aidreams-260k (trained, hidden 64, 4 layers, 4/4 heads, head_dim 16, ffn 172) when ../shared has it, else the MHA fixture.
const SOURCE = existsSync(AIDREAMS) ? AIDREAMS : MHA;
const IDS = [1, 403, 407, 261, 378, 271, 308, 262, 429, 300, 277, 315, 295, 290, 267, 319].map((i) => i % 320);
const SHAPE = { hidden: 192, layers: 6, heads: 12, kvHeads: 4, headDim: 32, ffn: 256, dtype: 'float32' as const };

async function logits(dir: string): Promise<Float32Array[]> {
  const out = join(tempDir(), 'artifact');
  await exportModel(dir, out, { attention: 'standard', layout: 'llmopt' });
  const model = await DecoderModel.open(out, { device: 'cpu', threads: 1 });
  const l = await model.forward(model.createCache(1, IDS.length), [IDS]);
  await model.release();
  return IDS.map((_, t) => l.at(0, t).slice());
}

const maxDiff = (a: Float32Array[], b: Float32Array[]) =>
  Math.max(...a.map((row, t) => Math.max(...row.map((v, i) => Math.abs(v - b[t]![i]!)))));

test('grown model (noise 0) computes the source: logits within 1e-4; noise 0.01 moves them', async () => {
  const reference = await logits(SOURCE);
  const exact = join(tempDir(), 'grown');
  const { spec } = await growModel(SOURCE, exact, { ...SHAPE, noise: 0 }, {});
  assert.equal(spec.hiddenSize, 192);
  assert.equal(spec.tiedEmbeddings, false);
  const diff = maxDiff(await logits(exact), reference);
  console.log(`# grown from ${SOURCE}: max |logit - source| = ${diff.toExponential(3)} (tolerance 1e-4)`);
  assert.ok(diff < 1e-4, `max diff ${diff}`);
  const noisy = join(tempDir(), 'noisy');
  await growModel(SOURCE, noisy, { ...SHAPE, noise: 0.01 }, {});
  const moved = maxDiff(await logits(noisy), reference);
  console.log(`# noise 0.01: max |logit - source| = ${moved.toFixed(3)}`);
  assert.ok(moved > 1e-3 && moved < 5, `noise 0.01 moved the logits by ${moved}`);
});

test('grouped source heads copied into smaller target groups: logits within 1e-4', async () => {
  // 8 heads / 2 kv heads (groups of 4) into 8 heads / 4 kv heads (groups of 2): each kv head is held twice.
  const knobs = { hidden: 64, layers: 2, heads: 8, kvHeads: 2, ffn: 96, vocab: 320, context: 64, dtype: 'float32' as const, tied: false };
  const { spec } = synthSpec('llama', knobs);
  const tmp = tempDir();
  await writeSyntheticLlama(tmp, spec);
  const source = join(tmp, spec.name);
  const grown = join(tempDir(), 'grown');
  await growModel(source, grown, { hidden: 96, layers: 3, heads: 8, kvHeads: 4, headDim: 16, ffn: 128, noise: 0, dtype: 'float32' }, {});
  const diff = maxDiff(await logits(grown), await logits(source));
  assert.ok(diff < 1e-4, `max diff ${diff}`);
});

test('head placement: kv heads copied when the target groups are smaller; query heads land in their kv group', () => {
  // Source 8 heads / 2 kv (groups of 4) into 8 heads / 4 kv (groups of 2): each source kv head gets two copies.
  const m = mapHeads({ heads: 8, kvHeads: 2 }, { heads: 8, kvHeads: 4 })!;
  assert.deepEqual(m.kvSource, [0, 0, 1, 1]);
  m.query.forEach((t, i) => assert.equal(m.kvSource[Math.floor(t / 2)], Math.floor(i / 4)));
  assert.equal(new Set(m.query).size, 8);
  // MHA 4/4 into 12/4: one query head per group of three, the rest new.
  assert.deepEqual(mapHeads({ heads: 4, kvHeads: 4 }, { heads: 12, kvHeads: 4 })!.query, [0, 3, 6, 9]);
  assert.equal(mapHeads({ heads: 4, kvHeads: 4 }, { heads: 12, kvHeads: 2 }), null);
});

test('the mixing matrix has orthonormal columns', () => {
  const [H, h] = [40, 8];
  const M = orthonormalColumns(H, h, 7);
  for (let a = 0; a < h; a++)
    for (let b = 0; b < h; b++) {
      let dot = 0;
      for (let p = 0; p < H; p++) dot += M[p * h + a]! * M[p * h + b]!;
      assert.ok(Math.abs(dot - (a === b ? 1 : 0)) < 1e-12);
    }
});
