// The training graph's gradients through Gemma's parts (tanh-GELU, (1 + w) norms added in the graph, four norms per
// layer, sliding-window masks, embedding scale; Gemma 3's q/k norms on gemma3-tiny, Gemma 2's attention and final
// soft-caps on the synthetic checkpoint of test/model/window-checkpoints.ts) equal central finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsSharedModel, sharedModel, tempDir } from '../support.js';
import { openHfModel } from '../../src/model/checkpoint.js';
import { buildTrainingGraph } from '../../src/passes/distill/train-graph.js';
import { TrainingSession } from '../../src/passes/distill/trainer.js';
import { seededRandom } from '../../src/runtime/sampling.js';
import { GEMMA2, writeCheckpoint } from '../model/window-checkpoints.js';
import { directionalDerivative } from './finite-difference.js';

// The synthetic Gemma 2 copies qwen3-tiny's tokenizer, so it needs ../shared too.
for (const [label, dir, skip] of [
  ['gemma3-tiny (q/k norms, local and global rope)', async () => sharedModel('gemma3-tiny'), needsSharedModel('gemma3-tiny')],
  ['gemma2 (attention and final soft-caps 2.5 and 4)', () => writeCheckpoint(GEMMA2), needsSharedModel('qwen3-tiny')],
] as const) {
  test(`${label}: gradients match finite differences, norms trained as their stored weights`, { skip }, async () => {
    const model = await openHfModel(await dir());
    const { spec } = model;
    if (label.startsWith('gemma2')) assert.ok(spec.attnSoftcap && spec.finalSoftcap, 'the soft-caps should be in the spec');
    const graph = await buildTrainingGraph(tempDir(), spec, model.weights, () => true, { temperature: 2, alpha: 0.5 });
    await model.close();
    const session = await TrainingSession.open(graph, 'cpu');
    const rand = seededRandom(7);
    // 12 tokens: past the window of 8, so the sliding layers' mask is in play.
    const B = 1;
    const S = 12;
    const token = () => BigInt(3 + Math.floor(rand() * 500));
    const batch = {
      B,
      S,
      ids: BigInt64Array.from({ length: B * S }, token),
      labels: BigInt64Array.from({ length: B * S }, token),
      mask: new Float32Array(B * S).fill(1),
    };
    const teacher = Float32Array.from({ length: B * S * spec.vocabSize }, () => (rand() - 0.5) * 4);
    const weights = new Map([...graph.parameters].map(([n, p]) => [n, p.values.slice()]));
    const { grads } = await session.step(batch, teacher, weights, spec.vocabSize);
    const last = spec.numLayers - 1;
    const kinds = [
      'model.embed_tokens.weight',
      'model.layers.0.input_layernorm.weight',
      'model.layers.0.post_attention_layernorm.weight',
      'model.layers.1.pre_feedforward_layernorm.weight',
      `model.layers.${last}.post_feedforward_layernorm.weight`,
      ...(spec.qkNorm ? ['model.layers.0.self_attn.q_norm.weight', `model.layers.${last}.self_attn.k_norm.weight`] : []),
      'model.layers.0.mlp.gate_proj.weight',
      'model.layers.0.self_attn.k_proj.weight',
      `model.layers.${last}.self_attn.q_proj.weight`,
      'model.layers.1.self_attn.v_proj.weight',
      'model.norm.weight',
    ];
    const eps = 1e-2;
    const failures: string[] = [];
    for (const name of kinds) {
      const w = weights.get(name)!;
      const g = grads.get(name)!;
      const loss = async () => (await session.step(batch, teacher, weights, spec.vocabSize)).loss;
      const { analytic, numeric } = await directionalDerivative(w, g, rand, eps, loss);
      // As in distill-gradients.test.ts: a float32 loss's central difference has ~5e-5 of rounding noise.
      const err = Math.abs(numeric - analytic) / Math.max(3e-3, Math.abs(numeric), Math.abs(analytic));
      console.log(`# ${name}: analytic ${analytic.toExponential(4)} numeric ${numeric.toExponential(4)} rel err ${err.toExponential(2)}`);
      if (err >= 2e-2) failures.push(`${name}: analytic ${analytic} vs numeric ${numeric}`);
    }
    await session.release();
    assert.deepEqual(failures, []);
  });
}
