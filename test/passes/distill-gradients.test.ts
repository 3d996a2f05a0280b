// The training graph's gradients are exact: for every parameter kind (embedding, norms, q/k/v/o with
// and without bias, gate/up/down, tied and untied lm_head, grouped-query attention, a Llama 3.x shape; Qwen2's q/k/v biases
// with an unbiased o_proj, Qwen3's q/k norms, SmolLM3's layers without rotary, Phi-3's fused qkv / gate_up trained as their
// parts with partial rotary) the gradient's dot product with a random direction equals the central finite difference of the loss.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GQA, LLAMA3_SHAPE, MHA, needsSharedModel, sharedModel, tempDir } from '../support.js';
import { openHfModel } from '../../src/model/checkpoint.js';
import { buildTrainingGraph } from '../../src/passes/distill/train-graph.js';
import { TrainingSession, type TrainBatch } from '../../src/passes/distill/trainer.js';
import { seededRandom } from '../../src/runtime/sampling.js';
import { writeSyntheticLlama, type LlamaShape } from '../../src/model/synthetic.js';
import { join } from 'node:path';
import { directionalDerivative } from './finite-difference.js';

/** B x S random token ids and labels (ids 3..302) with the loss mask `mask(i)` at flat position i. */
function randomBatch(rand: () => number, B: number, S: number, mask: (i: number) => number): TrainBatch {
  const token = () => BigInt(3 + Math.floor(rand() * 300));
  return {
    B,
    S,
    ids: BigInt64Array.from({ length: B * S }, token),
    labels: BigInt64Array.from({ length: B * S }, token),
    mask: Float32Array.from({ length: B * S }, (_, i) => mask(i)),
  };
}

/** A Llama 3.x-shaped synthetic checkpoint: SmolLM2's 9 heads / 3 kv heads (head_dim 8), tied, llama3 rope scaling. */
async function llama3Shaped(): Promise<string> {
  const root = tempDir();
  const config: LlamaShape = { ...LLAMA3_SHAPE, hidden_size: 72, intermediate_size: 96 };
  await writeSyntheticLlama(root, { name: 'llama3-shaped', config, shards: 1 });
  return join(root, 'llama3-shaped');
}

for (const [label, dir, skip] of [
  ['mha (tied lm_head)', MHA, undefined],
  ['llama 3.x shape (9 heads / 3 kv heads, tied, llama3 rope scaling)', llama3Shaped, undefined],
  ['gqa (untied, biases, 6 heads / 2 kv heads)', GQA, undefined],
  ['qwen2-tiny (q/k/v biases, o_proj unbiased)', sharedModel('qwen2-tiny'), needsSharedModel('qwen2-tiny')],
  ['qwen3-tiny (q/k norms, head_dim 32)', sharedModel('qwen3-tiny'), needsSharedModel('qwen3-tiny')],
  ['smollm3-tiny (layer 3 without rotary)', sharedModel('smollm3-tiny'), needsSharedModel('smollm3-tiny')],
  ['phi3-tiny (fused qkv and gate_up, partial rotary)', sharedModel('phi3-tiny'), needsSharedModel('phi3-tiny')],
] as const) {
  test(`${label}: gradients match finite differences for every parameter kind`, { skip }, async () => {
    const model = await openHfModel(typeof dir === 'string' ? dir : await dir());
    const { spec } = model;
    const graph = await buildTrainingGraph(tempDir(), spec, model.weights, () => true, { temperature: 2, alpha: 0.5 });
    await model.close();
    // Fused tensors (Phi-3) are trained as the parts every pass reads; saveStudent stacks them again
    // (distill-student-layout.test.ts), so no fused name may appear among the parameters.
    for (const f of spec.fusedTensors ?? []) {
      assert.ok(![...graph.parameters.keys()].some((n) => n.includes(`.${f.module}.`)), `${f.module} trained fused`);
    }
    const session = await TrainingSession.open(graph, 'cpu');
    const rand = seededRandom(5);
    const B = 2;
    const S = 6;
    const batch = randomBatch(rand, B, S, (i) => (i % S === S - 1 && i > S ? 0 : 1));
    const teacher = Float32Array.from({ length: B * S * spec.vocabSize }, () => (rand() - 0.5) * 4);
    const weights = new Map([...graph.parameters].map(([n, p]) => [n, p.values.slice()]));
    const { grads, loss } = await session.step(batch, teacher, weights, spec.vocabSize);
    assert.ok(Number.isFinite(loss));

    const kinds = [
      'model.embed_tokens.weight',
      'model.layers.0.input_layernorm.weight',
      'model.layers.1.post_attention_layernorm.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.1.self_attn.k_proj.weight',
      'model.layers.0.self_attn.v_proj.weight',
      'model.layers.1.self_attn.o_proj.weight',
      'model.layers.0.mlp.gate_proj.weight',
      'model.layers.1.mlp.up_proj.weight',
      'model.layers.0.mlp.down_proj.weight',
      'model.norm.weight',
      ...(spec.tiedEmbeddings ? [] : ['lm_head.weight']),
      ...(['q', 'k', 'v', 'o'] as const)
        .filter((p) => spec.biases[p])
        .map((p) => `model.layers.${p === 'o' ? 1 : 0}.self_attn.${p}_proj.bias`),
      ...(spec.qkNorm ? ['model.layers.0.self_attn.q_norm.weight', 'model.layers.1.self_attn.k_norm.weight'] : []),
      // The last layer of smollm3-tiny has no rotary: its attention weights take the no-rope path.
      ...(spec.ropeLayers?.includes(false)
        ? [spec.ropeLayers.indexOf(false)].flatMap((l) => [
            `model.layers.${l}.self_attn.q_proj.weight`,
            `model.layers.${l}.self_attn.k_proj.weight`,
          ])
        : []),
    ];
    const eps = 1e-2;
    for (const name of kinds) {
      const w = weights.get(name)!;
      const g = grads.get(name)!;
      const loss = async () => (await session.step(batch, teacher, weights, spec.vocabSize)).loss;
      const { analytic, numeric } = await directionalDerivative(w, g, rand, eps, loss);
      // The loss is float32 (about 4-6): its central difference carries ~1e-6 / (2 eps) = 5e-5 of rounding
      // noise (6e-5 seen on smollm3-tiny's o_proj, whose gradient along the same direction agrees to 5e-5
      // relative), so gradients smaller than 5e-3 are compared against that floor rather than themselves.
      const err = Math.abs(numeric - analytic) / Math.max(5e-3, Math.abs(numeric), Math.abs(analytic));
      console.log(`# ${name}: analytic ${analytic.toExponential(4)} numeric ${numeric.toExponential(4)} rel err ${err.toExponential(2)}`);
      assert.ok(err < 2e-2, `${name}: analytic ${analytic} vs numeric ${numeric}`);
    }
    await session.release();
  });
}

test('with the hidden-state loss, gradients still match finite differences', async () => {
  const model = await openHfModel(GQA);
  const { spec } = model;
  const pairs: Array<[number, number]> = [
    [0, 0],
    [2, 2],
  ];
  const graph = await buildTrainingGraph(tempDir(), spec, model.weights, () => true, {
    temperature: 1,
    alpha: 0,
    hidden: { weight: 0.5, pairs },
  });
  await model.close();
  const session = await TrainingSession.open(graph, 'cpu');
  const rand = seededRandom(9);
  const B = 1;
  const S = 5;
  const batch = randomBatch(rand, B, S, () => 1);
  const teacher = Float32Array.from({ length: B * S * spec.vocabSize }, () => (rand() - 0.5) * 4);
  const hidden = pairs.map(() => Float32Array.from({ length: B * S * spec.hiddenSize }, () => rand() - 0.5));
  const weights = new Map([...graph.parameters].map(([n, p]) => [n, p.values.slice()]));
  const first = await session.step(batch, teacher, weights, spec.vocabSize, hidden);
  assert.ok(first.hiddenMse! > 0);
  for (const name of ['model.layers.0.mlp.down_proj.weight', 'model.layers.2.self_attn.v_proj.weight', 'model.embed_tokens.weight']) {
    const w = weights.get(name)!;
    const g = first.grads.get(name)!;
    const v = Float32Array.from(w, () => rand() - 0.5);
    let analytic = 0;
    for (let i = 0; i < w.length; i++) analytic += g[i]! * v[i]!;
    const base = w.slice();
    const eps = 1e-3;
    const at = async (sign: number) => {
      for (let i = 0; i < w.length; i++) w[i] = base[i]! + sign * eps * v[i]!;
      return (await session.step(batch, teacher, weights, spec.vocabSize, hidden)).loss;
    };
    const numeric = ((await at(1)) - (await at(-1))) / (2 * eps);
    w.set(base);
    const err = Math.abs(numeric - analytic) / Math.max(1e-3, Math.abs(numeric), Math.abs(analytic));
    assert.ok(err < 2e-2, `${name}: analytic ${analytic} vs numeric ${numeric}`);
  }
  await session.release();
});
