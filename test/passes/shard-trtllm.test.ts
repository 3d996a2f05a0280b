// --format tensorrt-llm: config.json carries the mapping; reassembling the rank files (un-fusing qkv,
// concatenating tp shards, renumbering pipeline layers) gives back every source tensor exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint, SafetensorsFile } from '../../src/formats/safetensors.js';
import { tensorRtLlmStages } from '../../src/formats/tensorrt-llm.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { expectedTensors, layerTensorNames, type DecoderSpec } from '../../src/core/spec.js';
import { shardModel } from '../../src/passes/shard/shard.js';
import { sliceCols } from '../../src/passes/shard/slice.js';
import { GQA, MHA, needsSharedModel, sharedModel, tempDir } from '../support.js';

/** Concatenates row-major [r_k, cols] blocks along columns: [r, sum cols]. */
function concatCols(blocks: Float32Array[], rows: number): Float32Array {
  const widths = blocks.map((b) => b.length / rows);
  const total = widths.reduce((a, b) => a + b, 0);
  const out = new Float32Array(rows * total);
  for (let i = 0; i < rows; i++) {
    let off = 0;
    blocks.forEach((b, k) => {
      out.set(b.subarray(i * widths[k]!, (i + 1) * widths[k]!), i * total + off);
      off += widths[k]!;
    });
  }
  return out;
}

const cat = (parts: Float32Array[]) => {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
};

/** Rebuilds the Hugging Face tensors from rank{r}.safetensors. */
async function reassemble(dir: string, spec: DecoderSpec, tp: number, pp: number): Promise<Map<string, Float32Array>> {
  const files: SafetensorsFile[] = [];
  for (let r = 0; r < tp * pp; r++) files.push(await SafetensorsFile.open(join(dir, `rank${r}.safetensors`)));
  const read = (r: number, name: string) => files[r]!.readFloat32(name);
  const { hiddenSize: h, headDim: d, numHeads: H, kvHeads: KV } = spec;
  const kvRep = KV < tp; // one kv head per rank, repeated tp / KV times
  const out = new Map<string, Float32Array>();
  const stages = tensorRtLlmStages(spec.numLayers, pp);
  for (const [s, range] of stages.entries()) {
    const ranks = Array.from({ length: tp }, (_, t) => s * tp + t);
    for (let i = range.from; i < range.to; i++) {
      const n = layerTensorNames(i);
      const p = `transformer.layers.${i - range.from}`;
      out.set(n.inputNorm, await read(ranks[0]!, `${p}.input_layernorm.weight`));
      out.set(n.postAttentionNorm, await read(ranks[0]!, `${p}.post_layernorm.weight`));
      const q: Float32Array[] = [];
      const k: Float32Array[] = [];
      const v: Float32Array[] = [];
      const qRows = (H / tp) * d * h;
      const kvRows = (kvRep ? 1 : KV / tp) * d * h;
      for (const [t, r] of ranks.entries()) {
        const qkv = await read(r, `${p}.attention.qkv.weight`);
        q.push(qkv.subarray(0, qRows));
        // Replicated kv heads: take each head once, from the first rank holding it.
        if (!kvRep || t % (tp / KV) === 0) {
          k.push(qkv.subarray(qRows, qRows + kvRows));
          v.push(qkv.subarray(qRows + kvRows));
        }
      }
      out.set(`${n.q}.weight`, cat(q));
      out.set(`${n.k}.weight`, cat(k));
      out.set(`${n.v}.weight`, cat(v));
      out.set(`${n.o}.weight`, concatCols(await Promise.all(ranks.map((r) => read(r, `${p}.attention.dense.weight`))), h));
      out.set(`${n.gate}.weight`, cat(await Promise.all(ranks.map((r) => read(r, `${p}.mlp.fc.weight`)))));
      out.set(`${n.up}.weight`, cat(await Promise.all(ranks.map((r) => read(r, `${p}.mlp.gate.weight`)))));
      out.set(`${n.down}.weight`, concatCols(await Promise.all(ranks.map((r) => read(r, `${p}.mlp.proj.weight`))), h));
      if (spec.biases.q) {
        const qkvb = await Promise.all(ranks.map((r) => read(r, `${p}.attention.qkv.bias`)));
        const qb = (H / tp) * d;
        const kvb = (kvRep ? 1 : KV / tp) * d;
        out.set(`${n.q}.bias`, cat(qkvb.map((b) => b.subarray(0, qb))));
        const kvRanks = qkvb.filter((_, t) => !kvRep || t % (tp / KV) === 0);
        out.set(`${n.k}.bias`, cat(kvRanks.map((b) => b.subarray(qb, qb + kvb))));
        out.set(`${n.v}.bias`, cat(kvRanks.map((b) => b.subarray(qb + kvb))));
      }
      if (spec.biases.o) out.set(`${n.o}.bias`, await read(ranks[0]!, `${p}.attention.dense.bias`));
      if (spec.qkNorm) {
        // Over head_dim: every rank holds the whole weight.
        for (const r of ranks) {
          assert.deepEqual(await read(r, `${p}.attention.q_layernorm.weight`), await read(ranks[0]!, `${p}.attention.q_layernorm.weight`));
        }
        out.set(n.qNorm, await read(ranks[ranks.length - 1]!, `${p}.attention.q_layernorm.weight`));
        out.set(n.kNorm, await read(ranks[ranks.length - 1]!, `${p}.attention.k_layernorm.weight`));
      }
    }
  }
  out.set('model.embed_tokens.weight', await read(0, 'transformer.vocab_embedding.weight'));
  const last = (pp - 1) * tp;
  out.set('model.norm.weight', await read(last, 'transformer.ln_f.weight'));
  const head = cat(await Promise.all(Array.from({ length: tp }, (_, t) => read(last + t, 'lm_head.weight'))));
  out.set(spec.tiedEmbeddings ? 'lm_head(tied)' : 'lm_head.weight', head.subarray(0, spec.vocabSize * h));
  await Promise.all(files.map((f) => f.close()));
  return out;
}

for (const [name, dir, tp, pp, skip, architecture] of [
  ['mha', MHA, 2, 2, undefined, 'LlamaForCausalLM'],
  ['gqa', GQA, 2, 3, undefined, 'LlamaForCausalLM'],
  ['gqa', GQA, 6, 1, undefined, 'LlamaForCausalLM'],
  // QWen format: qwen2's q/k/v biases (kv heads replicated at tp 4), qwen3's q/k layernorms.
  ['qwen2-tiny', sharedModel('qwen2-tiny'), 2, 2, needsSharedModel('qwen2-tiny'), 'Qwen2ForCausalLM'],
  ['qwen2-tiny', sharedModel('qwen2-tiny'), 4, 1, needsSharedModel('qwen2-tiny'), 'Qwen2ForCausalLM'],
  ['qwen3-tiny', sharedModel('qwen3-tiny'), 2, 2, needsSharedModel('qwen3-tiny'), 'Qwen3ForCausalLM'],
] as const) {
  test(`${name} tp ${tp} pp ${pp}: TensorRT-LLM rank files reassemble to the source weights exactly`, { skip }, async () => {
    const out = join(tempDir(), 'trtllm');
    await shardModel(dir, out, { tp, pp, vocab: 'replicated', attention: 'fused', format: 'tensorrt-llm' });
    const spec = readModelSpec(dir);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    assert.deepEqual(config.mapping, { world_size: tp * pp, tp_size: tp, pp_size: pp });
    assert.equal(config.architecture, architecture);
    if (spec.architecture.startsWith('qwen')) {
      assert.equal(config.qwen_type, spec.architecture);
      assert.equal(config.attn_bias, spec.biases.q);
      assert.equal(config.head_size, spec.headDim);
    } else assert.equal(config.qwen_type, undefined);
    assert.equal(config.dtype, spec.weightDtype);
    const ckpt = await Checkpoint.open(dir);
    const rebuilt = await reassemble(out, spec, tp, pp);
    for (const [tensor, values] of rebuilt) {
      const source = tensor === 'lm_head(tied)' ? 'model.embed_tokens.weight' : tensor;
      assert.deepEqual(values, await ckpt.readFloat32(source), tensor);
    }
    // Every source tensor, and a tied lm_head once more (checked against the embedding).
    assert.equal(rebuilt.size, expectedTensors(spec).size + (spec.tiedEmbeddings ? 1 : 0));
    await ckpt.close();
  });
}

test('sliceCols keeps the given columns of every row', () => {
  assert.deepEqual(sliceCols(Float32Array.from([1, 2, 3, 4, 5, 6]), 2, 3, { from: 1, to: 3 }), Float32Array.from([2, 3, 5, 6]));
});
