// Layer-by-layer calibration equals a plain forward pass: the Gram matrices of every linear input,
// computed block by block on propagated hidden states, match those of the whole model run at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, MHA, SAMPLE_TEXT, tempDir } from '../support.js';
import { openHfModel } from '../../src/model/checkpoint.js';
import { GraphBuilder, encodeModel } from '../../src/formats/onnx/graph.js';
import { ExternalDataWriter } from '../../src/formats/onnx/external-data.js';
import { captureOutput, CAPTURE_NAMES } from '../../src/core/io.js';
import { buildDecoderGraph } from '../../src/model/decoder.js';
import { LayerwiseCalibration, loadCalibration } from '../../src/passes/calibration.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { ModelSession, Tensor } from '../../src/runtime/session.js';

for (const [name, dir] of [
  ['mha', MHA],
  ['gqa', GQA],
] as const) {
  test(`${name}: layer-by-layer Gram matrices equal those of a plain forward pass`, async () => {
    const model = await openHfModel(dir);
    const { spec } = model;
    const set = loadCalibration(SAMPLE_TEXT, loadTokenizer(dir), 4, 24);
    assert.equal(set.windows.length, 4);

    // The whole model with raw captures, run once per window (no padding involved).
    const out = tempDir();
    const data = new ExternalDataWriter(join(out, 'model.onnx.data'), 'model.onnx.data');
    const g = new GraphBuilder(data);
    await buildDecoderGraph(g, spec, model.weights, { attention: 'standard', captures: 'raw' });
    data.close();
    writeFileSync(join(out, 'model.onnx'), encodeModel(g, 'full', { opset: 17, producerVersion: 'test' }));
    const session = await ModelSession.open(join(out, 'model.onnx'), { device: 'cpu' });
    const expected = new Map<string, Float64Array>();
    for (const ids of set.windows) {
      const S = ids.length;
      const feeds: Record<string, Tensor> = {
        input_ids: new Tensor('int64', BigInt64Array.from(ids, BigInt), [1, S]),
        attention_mask: new Tensor('int64', new BigInt64Array(S).fill(1n), [1, S]),
        position_ids: new Tensor(
          'int64',
          BigInt64Array.from(ids, (_, i) => BigInt(i)),
          [1, S],
        ),
      };
      for (let i = 0; i < spec.numLayers; i++)
        for (const kv of ['key', 'value'])
          feeds[`past_key_values.${i}.${kv}`] = new Tensor('float32', new Float32Array(0), [1, spec.kvHeads, 0, spec.headDim]);
      const r = await session.run(feeds);
      for (let layer = 0; layer < spec.numLayers; layer++) {
        for (const c of CAPTURE_NAMES) {
          const t = r[captureOutput(layer, c)]!;
          const x = t.data as Float32Array;
          const F = t.dims[2]!;
          const key = `${layer}.${c}`;
          const gram = expected.get(key) ?? new Float64Array(F * F);
          for (let s = 0; s < S; s++)
            for (let a = 0; a < F; a++) for (let b = 0; b < F; b++) gram[a * F + b]! += x[s * F + a]! * x[s * F + b]!;
          expected.set(key, gram);
        }
      }
    }
    await session.release();

    // Block by block, in padded batches of 3 (so padding is exercised).
    const calib = await LayerwiseCalibration.start(spec, model.weights, set, 3);
    let worst = 0;
    for (let layer = 0; layer < spec.numLayers; layer++) {
      const stats = await calib.statistics(layer, model.weights);
      for (const c of CAPTURE_NAMES) {
        const got = stats.get(c)!;
        assert.equal(
          got.tokens,
          set.windows.reduce((a, w) => a + w.length, 0),
        );
        const want = expected.get(`${layer}.${c}`)!;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got.gram[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
      }
      await calib.advance(layer, model.weights);
    }
    calib.close();
    await model.close();
    console.log(`# ${name}: worst relative Gram difference ${worst.toExponential(2)}`);
    assert.ok(worst < 1e-4, `worst ${worst}`);
  });
}
