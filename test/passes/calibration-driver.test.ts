// calibrateLayerwise, the one layer loop GPTQ, SparseGPT and Wanda plug into: every target is visited
// once, in layer order, with the statistic it asked for; sequential calibration feeds each layer the
// outputs of the compressed layers before it, non-sequential the dense model's; tokens are counted once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GQA, SAMPLE_TEXT } from '../support.js';
import { openHfModel } from '../../src/model/checkpoint.js';
import { calibrateLayerwise, loadModelCalibration, type LayerInputs, type LayerwiseMethod } from '../../src/passes/calibration.js';
import { selectTargets } from '../../src/passes/targets.js';

/** A method that zeroes every weight and records what it was given, by module. */
function recorder(statistic: LayerwiseMethod['statistic'], seen: Map<string, LayerInputs>, layersDone: number[]): LayerwiseMethod {
  return {
    statistic,
    compress: (t, w, inputs) => {
      assert.ok(!seen.has(t.module), `${t.module} visited twice`);
      seen.set(t.module, inputs);
      return new Float32Array(w.length);
    },
    layerDone: async (layer, targets, compressed) => {
      layersDone.push(layer);
      assert.deepEqual([...compressed.keys()].sort(), targets.map((t) => `${t.module}.weight`).sort());
    },
  };
}

test('calibrateLayerwise: order, statistics, token count and the sequential choice', async () => {
  const model = await openHfModel(GQA);
  try {
    const { spec, weights } = model;
    const set = loadModelCalibration(SAMPLE_TEXT, GQA, spec, 4, 16);
    const targets = selectTargets(spec, []);
    const tokens = set.windows.reduce((a, w) => a + w.length, 0);

    const hessians = new Map<string, LayerInputs>();
    const done: number[] = [];
    const progress: number[] = [];
    const r = await calibrateLayerwise(spec, weights, set, targets, recorder('hessian', hessians, done), {
      onProgress: (d) => progress.push(d),
    });
    assert.equal(r.tokens, tokens);
    assert.deepEqual(done, [...Array(spec.numLayers).keys()]);
    assert.deepEqual(
      progress,
      [...Array(spec.numLayers).keys()].map((l) => l + 1),
    );
    assert.deepEqual([...hessians.keys()].sort(), targets.map((t) => t.module).sort());
    for (const t of targets) {
      const s = hessians.get(t.module)!;
      assert.equal(s.tokens, tokens);
      assert.equal(s.hessian!.length, t.cols * t.cols);
      assert.equal(s.norms, null);
    }

    // Norms are the Hessian's diagonal; without sequential, layer 1 sees the dense layer 0's outputs.
    const dense = new Map<string, LayerInputs>();
    await calibrateLayerwise(spec, weights, set, targets, recorder('norms', dense, []), { sequential: false, batchSize: 3 });
    const first = targets.find((t) => t.layer === 0)!;
    const diag = (h: Float64Array, F: number) => Float64Array.from({ length: F }, (_, j) => h[j * F + j]!);
    const close = (a: Float64Array, b: Float64Array) => a.every((x, i) => Math.abs(x - b[i]!) <= 1e-4 * (1 + Math.abs(x)));
    assert.ok(
      close(dense.get(first.module)!.norms!, diag(hessians.get(first.module)!.hessian!, first.cols)),
      'layer 0: same inputs either way',
    );
    const later = targets.find((t) => t.layer === 1)!;
    // Sequential: layer 0 zeroed, so layer 1 sees different inputs than on the dense model.
    assert.ok(
      !close(dense.get(later.module)!.norms!, diag(hessians.get(later.module)!.hessian!, later.cols)),
      'layer 1: sequential differs',
    );
  } finally {
    await model.close();
  }
});
