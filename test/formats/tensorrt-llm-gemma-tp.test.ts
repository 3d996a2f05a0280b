// TensorRT-LLM Gemma 2 / Gemma 3 checkpoints beyond --tp 1: every rank file against a rebuild of TensorRT-LLM's Gemma
// converter (tensorrt_llm/models/gemma/convert.py, load_gemma_weights with HfParser), written here from its source, bit
// for bit; the rank files reassembled give back every Hugging Face tensor; what that converter cannot split is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { needsSharedModel, sharedModel, tempDir } from '../support.js';
import { Checkpoint, SafetensorsFile } from '../../src/formats/safetensors.js';
import { tensorRtLlmStages } from '../../src/formats/tensorrt-llm.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { expectedTensors, layerTensorNames, type DecoderSpec } from '../../src/core/spec.js';
import { shardModel } from '../../src/passes/shard/shard.js';
import { GEMMA2, GEMMA2_MQA, writeCheckpoint } from '../model/window-checkpoints.js';
import { cat, concatCols, split } from './tensor-blocks.js';

// writeCheckpoint borrows qwen3-tiny's tokenizer from ../shared.
const skipGemma2 = needsSharedModel('qwen3-tiny');
const skipGemma3 = needsSharedModel('gemma3-tiny');

/**
 * load_gemma_weights for tp rank `tpRank` (HfParser): it walks every Hugging Face parameter and, under the renamed
 * TensorRT-LLM name (global layer numbers), writes
 * - q_proj: q split by rows; k_proj and v_proj whole when num_key_value_heads is 1 ("mqa_mode"), else split by rows;
 *   concatenated [q; k; v] as attention.qkv;
 * - o_proj split along dim 1 as attention.dense; gate_proj split by rows as mlp.fc, up_proj split by rows as mlp.gate
 *   (both transposed twice on the way); down_proj split along dim 1 as mlp.proj;
 * - embed_tokens split by rows as lm_head (np.split: equal parts), and as vocab_embedding whole, or split by rows
 *   (embedding_sharding_dim 0) when use_parallel_embedding;
 * - every norm (input, post-attention, pre/post-feedforward, q/k norms, model.norm): param + 1.0 in float32.
 */
async function gemmaConverter(source: Checkpoint, spec: DecoderSpec, tp: number, tpRank: number, parallelEmbedding: boolean) {
  const out = new Map<string, Float32Array>();
  const read = (name: string) => source.readFloat32(name);
  const shape = (name: string) => source.info(name).shape;
  const mqa = spec.kvHeads === 1;
  for (const name of source.names()) {
    const layer = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(name);
    if (name === 'model.embed_tokens.weight') {
      const embed = await read(name);
      out.set('lm_head.weight', split(embed, shape(name), tp, tpRank, 0));
      out.set('transformer.vocab_embedding.weight', parallelEmbedding ? split(embed, shape(name), tp, tpRank, 0) : embed);
    } else if (name === 'model.norm.weight')
      out.set(
        'transformer.ln_f.weight',
        (await read(name)).map((x) => x + 1),
      );
    else if (layer) {
      const [, i, module] = layer;
      const p = `transformer.layers.${i}`;
      const hf = `model.layers.${i}`;
      const rows = async (n: string) => split(await read(n), shape(n), tp, tpRank, 0);
      const cols = async (n: string) => split(await read(n), shape(n), tp, tpRank, 1);
      const norms: Record<string, string> = {
        input_layernorm: 'input_layernorm',
        post_attention_layernorm: 'post_layernorm',
        pre_feedforward_layernorm: 'pre_feedforward_layernorm',
        post_feedforward_layernorm: 'post_feedforward_layernorm',
        'self_attn.q_norm': 'attention.q_layernorm',
        'self_attn.k_norm': 'attention.k_layernorm',
      };
      if (module === 'self_attn.q_proj') {
        const kv = async (m: string) => (mqa ? read(`${hf}.self_attn.${m}.weight`) : rows(`${hf}.self_attn.${m}.weight`));
        out.set(`${p}.attention.qkv.weight`, cat([await rows(name), await kv('k_proj'), await kv('v_proj')]));
      } else if (module === 'self_attn.o_proj') out.set(`${p}.attention.dense.weight`, await cols(name));
      else if (module === 'mlp.gate_proj') {
        out.set(`${p}.mlp.fc.weight`, await rows(name));
        out.set(`${p}.mlp.gate.weight`, await rows(`${hf}.mlp.up_proj.weight`));
      } else if (module === 'mlp.down_proj') out.set(`${p}.mlp.proj.weight`, await cols(name));
      else if (module && norms[module])
        out.set(
          `${p}.${norms[module]}.weight`,
          (await read(name)).map((x) => x + 1),
        );
      else assert.ok(['self_attn.k_proj', 'self_attn.v_proj', 'mlp.up_proj'].includes(module!), `unhandled ${name}`);
    } else assert.fail(`unhandled ${name}`);
  }
  return out;
}

/**
 * The rank file of (stage, tpRank): the converter's tensors kept as models/gemma/model.py builds the stage
 * (vocab_embedding on the first, ln_f and lm_head on the last, DecoderLayerList's layers numbered from 0).
 */
function stageOf(all: Map<string, Float32Array>, spec: DecoderSpec, pp: number, stage: number): Map<string, Float32Array> {
  const range = tensorRtLlmStages(spec.numLayers, pp)[stage]!;
  const out = new Map<string, Float32Array>();
  for (const [name, values] of all) {
    const m = /^transformer\.layers\.(\d+)\.(.+)$/.exec(name);
    if (m) {
      const i = Number(m[1]);
      if (i >= range.from && i < range.to) out.set(`transformer.layers.${i - range.from}.${m[2]}`, values);
    } else if (name === 'transformer.vocab_embedding.weight') {
      if (stage === 0) out.set(name, values);
    } else if (stage === pp - 1) out.set(name, values);
  }
  return out;
}

/** The Hugging Face tensors back from the rank files (norms as stored: w + 1). */
async function reassemble(dir: string, spec: DecoderSpec, tp: number, pp: number, parallelEmbedding: boolean) {
  const files: SafetensorsFile[] = [];
  for (let r = 0; r < tp * pp; r++) files.push(await SafetensorsFile.open(join(dir, `rank${r}.safetensors`)));
  const { hiddenSize: h, headDim: d, numHeads: H, kvHeads: KV } = spec;
  const out = new Map<string, Float32Array>();
  /** The tensor of every tp rank of a stage; `same` checks they are equal (replicated) and returns one. */
  const all = (stage: number, name: string) => Promise.all(files.slice(stage * tp, (stage + 1) * tp).map((f) => f.readFloat32(name)));
  const same = async (stage: number, name: string) => {
    const parts = await all(stage, name);
    for (const p of parts) assert.deepEqual(p, parts[0], `${name} replicated over tp`);
    return parts[0]!;
  };
  for (const [s, range] of tensorRtLlmStages(spec.numLayers, pp).entries()) {
    for (let i = range.from; i < range.to; i++) {
      const n = layerTensorNames(i);
      const p = `transformer.layers.${i - range.from}`;
      out.set(n.inputNorm, await same(s, `${p}.input_layernorm.weight`));
      out.set(n.postAttentionNorm, await same(s, `${p}.post_layernorm.weight`));
      out.set(n.preFeedforwardNorm, await same(s, `${p}.pre_feedforward_layernorm.weight`));
      out.set(n.postFeedforwardNorm, await same(s, `${p}.post_feedforward_layernorm.weight`));
      if (spec.qkNorm) {
        out.set(n.qNorm, await same(s, `${p}.attention.q_layernorm.weight`));
        out.set(n.kNorm, await same(s, `${p}.attention.k_layernorm.weight`));
      }
      const qkv = await all(s, `${p}.attention.qkv.weight`);
      const qRows = (H / tp) * d * h;
      const kvRows = (KV === 1 ? 1 : KV / tp) * d * h;
      out.set(`${n.q}.weight`, cat(qkv.map((w) => w.subarray(0, qRows))));
      const k = qkv.map((w) => w.subarray(qRows, qRows + kvRows));
      const v = qkv.map((w) => w.subarray(qRows + kvRows));
      out.set(`${n.k}.weight`, KV === 1 ? k[0]! : cat(k));
      out.set(`${n.v}.weight`, KV === 1 ? v[0]! : cat(v));
      if (KV === 1) for (let t = 1; t < tp; t++) assert.deepEqual([k[t], v[t]], [k[0], v[0]], 'the one kv head on every rank');
      out.set(`${n.o}.weight`, concatCols(await all(s, `${p}.attention.dense.weight`), h));
      out.set(`${n.gate}.weight`, cat(await all(s, `${p}.mlp.fc.weight`)));
      out.set(`${n.up}.weight`, cat(await all(s, `${p}.mlp.gate.weight`)));
      out.set(`${n.down}.weight`, concatCols(await all(s, `${p}.mlp.proj.weight`), h));
    }
  }
  const embedding = 'transformer.vocab_embedding.weight';
  out.set('model.embed_tokens.weight', parallelEmbedding ? cat(await all(0, embedding)) : await same(0, embedding));
  out.set('model.norm.weight', await same(pp - 1, 'transformer.ln_f.weight'));
  const head = cat(await all(pp - 1, 'lm_head.weight'));
  await Promise.all(files.map((f) => f.close()));
  return { out, head };
}

const cases = [
  { name: 'gemma2', model: () => writeCheckpoint(GEMMA2), tp: 2, pp: 1, vocab: 'replicated', skip: skipGemma2 },
  { name: 'gemma2', model: () => writeCheckpoint(GEMMA2), tp: 2, pp: 2, vocab: 'split', skip: skipGemma2 },
  // One kv head, fewer than tp: whole on both ranks.
  { name: 'gemma2 (1 kv head)', model: () => writeCheckpoint(GEMMA2_MQA), tp: 2, pp: 1, vocab: 'replicated', skip: skipGemma2 },
  { name: 'gemma3-tiny', model: async () => sharedModel('gemma3-tiny'), tp: 2, pp: 1, vocab: 'replicated', skip: skipGemma3 },
  { name: 'gemma3-tiny', model: async () => sharedModel('gemma3-tiny'), tp: 2, pp: 3, vocab: 'split', skip: skipGemma3 },
] as const;

for (const { name, model, tp, pp, vocab, skip } of cases) {
  test(`${name} tp ${tp} pp ${pp} --vocab ${vocab}: rank files equal TensorRT-LLM's Gemma converter split and reassemble`, {
    skip,
  }, async () => {
    const dir = await model();
    const out = join(tempDir(), 'trt');
    await shardModel(dir, out, { tp, pp, vocab, attention: 'fused', format: 'tensorrt-llm' });
    const spec = readModelSpec(dir);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    assert.deepEqual(config.mapping, { world_size: tp * pp, tp_size: tp, pp_size: pp });
    assert.equal(config.use_parallel_embedding, vocab === 'split');
    assert.equal(readdirSync(out).filter((f) => f.endsWith('.safetensors')).length, tp * pp);
    const parallel = vocab === 'split';
    const source = await Checkpoint.open(dir);
    try {
      for (let tpRank = 0; tpRank < tp; tpRank++) {
        const converted = await gemmaConverter(source, spec, tp, tpRank, parallel);
        for (let stage = 0; stage < pp; stage++) {
          const want = stageOf(converted, spec, pp, stage);
          const rank = stage * tp + tpRank;
          const file = await SafetensorsFile.open(join(out, `rank${rank}.safetensors`));
          try {
            assert.deepEqual([...file.tensors.keys()].sort(), [...want.keys()].sort(), `rank ${rank} tensor names`);
            for (const [tensor, values] of want) assert.deepEqual(await file.readFloat32(tensor), values, `rank ${rank} ${tensor}`);
          } finally {
            await file.close();
          }
        }
      }
      const { out: rebuilt, head } = await reassemble(out, spec, tp, pp, parallel);
      for (const [tensor, values] of rebuilt) {
        const original = await source.readFloat32(tensor);
        const want = /norm\.weight$/.test(tensor) ? original.map((x) => x + 1) : original;
        assert.deepEqual(values, want, tensor);
      }
      assert.equal(rebuilt.size, expectedTensors(spec).size);
      assert.deepEqual(head, await source.readFloat32('model.embed_tokens.weight'), 'lm_head: the tied embedding');
    } finally {
      await source.close();
    }
  });
}

test('gemma: more kv heads than one but fewer than --tp, and a vocabulary --tp does not divide, are refused', {
  skip: skipGemma2 ?? skipGemma3,
}, async () => {
  const parent = tempDir();
  const shard = (dir: string, tp: number) =>
    shardModel(dir, join(parent, 'out'), { tp, vocab: 'replicated', attention: 'fused', format: 'tensorrt-llm' });
  await assert.rejects(
    shard(sharedModel('gemma3-tiny'), 4),
    /--format tensorrt-llm cannot split gemma3's 2 key\/value heads over --tp 4: TensorRT-LLM's Gemma converter \(models\/gemma\/convert\.py\) repeats a single kv head on every rank but cuts more into tp row blocks \(choose a --tp that divides 2\); use --format onnx/,
  );
  await assert.rejects(shard(await writeCheckpoint(GEMMA2), 4), /cannot split gemma2's 2 key\/value heads over --tp 4/);
  await assert.rejects(
    shard(await writeCheckpoint(GEMMA2_MQA), 4),
    /--format tensorrt-llm cannot split gemma2's lm_head over --tp 4: TensorRT-LLM's Gemma converter \(models\/gemma\/convert\.py\) cuts the vocabulary of 514 into tp equal row blocks/,
  );
  assert.deepEqual(readdirSync(parent), [], 'nothing written');
});
