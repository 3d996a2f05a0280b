// --format tensorrt-llm: config.json carries the mapping; reassembling the rank files (un-fusing qkv,
// concatenating tp shards, renumbering pipeline layers) gives back every source tensor exactly, and a rebuild of
// TensorRT-LLM's own converter split, written here from its source, gives every rank tensor bit for bit.
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
import { writeSyntheticLlama } from '../../src/model/synthetic.js';
import { GQA, MHA, needsSharedModel, sharedModel, tempDir } from '../support.js';
import { cat, concatCols, split } from '../formats/tensor-blocks.js';

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

/*
 * TensorRT-LLM's converter, per rank (tensorrt_llm/models/llama/convert.py load_weights_from_hf_model, the same for
 * tensorrt_llm/models/qwen/convert.py; helpers in models/convert_utils.py):
 * - split(v, tp, rank, dim): equal chunks along dim; split_matrix_tp is split.
 * - q, k, v split by rows, after dup_kv_weight repeats each kv head tp / kv_heads times when kv_heads < tp, then
 *   concatenated [q_r; k_r; v_r] as attention.qkv (biases the same way).
 * - attention.dense = o_proj split along dim 1; mlp.fc = gate_proj and mlp.gate = up_proj split by rows; mlp.proj =
 *   down_proj split along dim 1; row-parallel biases whole. Norms (and Qwen3's q/k layernorms) whole.
 * - layers of pipeline stage s = Mapping.pp_layers (torch.tensor_split), renumbered from 0.
 * - vocab_embedding whole on the first stage (use_parallel_embedding false); lm_head (the embedding when tied) padded
 *   with zero rows to a multiple of tp (pad_vocab_size) and split by rows on the last stage.
 */
function dupKvWeight(v: Float32Array, kvHeads: number, tp: number): Float32Array {
  const reps = tp / kvHeads;
  const perHead = v.length / kvHeads;
  const out = new Float32Array(v.length * reps);
  for (let h = 0; h < kvHeads; h++)
    for (let r = 0; r < reps; r++) out.set(v.subarray(h * perHead, (h + 1) * perHead), (h * reps + r) * perHead);
  return out;
}

async function converterRank(
  source: Checkpoint,
  spec: DecoderSpec,
  tp: number,
  pp: number,
  rank: number,
): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  const [stage, tpRank] = [Math.floor(rank / tp), rank % tp];
  const range = tensorRtLlmStages(spec.numLayers, pp)[stage]!;
  const read = (name: string) => source.readFloat32(name);
  const shape = (name: string) => source.info(name).shape;
  const { kvHeads: KV, hiddenSize: h } = spec;
  const qkv = async (suffix: 'weight' | 'bias', n: ReturnType<typeof layerTensorNames>) => {
    const parts: Float32Array[] = [];
    for (const m of [n.q, n.k, n.v]) {
      let v = await read(`${m}.${suffix}`);
      let rows = shape(`${m}.${suffix}`)[0]!;
      if (m !== n.q && KV < tp) {
        v = dupKvWeight(v, KV, tp);
        rows *= tp / KV;
      }
      parts.push(split(v, suffix === 'weight' ? [rows, h] : [rows], tp, tpRank, 0));
    }
    return cat(parts);
  };
  // models/gemma/convert.py: every Gemma norm weight stored plus 1, added in float32.
  const gemma = spec.architecture === 'gemma3';
  const norm = async (name: string) => {
    const w = await read(name);
    return gemma ? w.map((x) => x + 1) : w;
  };
  if (stage === 0) out.set('transformer.vocab_embedding.weight', await read('model.embed_tokens.weight'));
  for (let i = range.from; i < range.to; i++) {
    const n = layerTensorNames(i);
    const p = `transformer.layers.${i - range.from}`;
    out.set(`${p}.input_layernorm.weight`, await norm(n.inputNorm));
    out.set(`${p}.post_layernorm.weight`, await norm(n.postAttentionNorm));
    if (gemma) {
      out.set(`${p}.pre_feedforward_layernorm.weight`, await norm(n.preFeedforwardNorm));
      out.set(`${p}.post_feedforward_layernorm.weight`, await norm(n.postFeedforwardNorm));
    }
    out.set(`${p}.attention.qkv.weight`, await qkv('weight', n));
    if (spec.biases.q) out.set(`${p}.attention.qkv.bias`, await qkv('bias', n));
    out.set(`${p}.attention.dense.weight`, split(await read(`${n.o}.weight`), shape(`${n.o}.weight`), tp, tpRank, 1));
    if (spec.biases.o) out.set(`${p}.attention.dense.bias`, await read(`${n.o}.bias`));
    if (spec.qkNorm) {
      out.set(`${p}.attention.q_layernorm.weight`, await norm(n.qNorm));
      out.set(`${p}.attention.k_layernorm.weight`, await norm(n.kNorm));
    }
    out.set(`${p}.mlp.fc.weight`, split(await read(`${n.gate}.weight`), shape(`${n.gate}.weight`), tp, tpRank, 0));
    out.set(`${p}.mlp.gate.weight`, split(await read(`${n.up}.weight`), shape(`${n.up}.weight`), tp, tpRank, 0));
    out.set(`${p}.mlp.proj.weight`, split(await read(`${n.down}.weight`), shape(`${n.down}.weight`), tp, tpRank, 1));
  }
  if (stage === pp - 1) {
    out.set('transformer.ln_f.weight', await norm('model.norm.weight'));
    const head = await read(spec.tiedEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
    const padded = new Float32Array(Math.ceil(spec.vocabSize / tp) * tp * h);
    padded.set(head);
    out.set('lm_head.weight', split(padded, [padded.length / h, h], tp, tpRank, 0));
  }
  return out;
}

for (const [name, dir, tp, pp, skip] of [
  ['gqa', GQA, 2, 3, undefined],
  ['gqa', GQA, 6, 1, undefined],
  ['mha', MHA, 2, 2, undefined],
  ['qwen2-tiny', sharedModel('qwen2-tiny'), 4, 1, needsSharedModel('qwen2-tiny')],
  ['qwen3-tiny', sharedModel('qwen3-tiny'), 2, 2, needsSharedModel('qwen3-tiny')],
  // Gemma beyond tp 1 against its own converter's rules, and Phi-3: test/formats/tensorrt-llm-gemma-tp.test.ts, -phi3.test.ts.
  ['gemma3-tiny', sharedModel('gemma3-tiny'), 1, 2, needsSharedModel('gemma3-tiny')],
] as const) {
  test(`${name} tp ${tp} pp ${pp}: every rank file equals TensorRT-LLM's converter split bit for bit`, { skip }, async () => {
    const out = join(tempDir(), 'trtllm');
    await shardModel(dir, out, { tp, pp, vocab: 'replicated', attention: 'fused', format: 'tensorrt-llm' });
    const spec = readModelSpec(dir);
    const source = await Checkpoint.open(dir);
    try {
      for (let rank = 0; rank < tp * pp; rank++) {
        const want = await converterRank(source, spec, tp, pp, rank);
        const file = await SafetensorsFile.open(join(out, `rank${rank}.safetensors`));
        try {
          assert.deepEqual([...file.tensors.keys()].sort(), [...want.keys()].sort(), `rank ${rank} tensor names`);
          for (const [tensor, values] of want) assert.deepEqual(await file.readFloat32(tensor), values, `rank ${rank} ${tensor}`);
        } finally {
          await file.close();
        }
      }
    } finally {
      await source.close();
    }
  });
}

test("gemma3-tiny: Gemma3ForCausalLM config keys as TensorRT-LLM's GemmaConfig holds them", {
  skip: needsSharedModel('gemma3-tiny'),
}, async () => {
  const out = join(tempDir(), 'gemma3');
  await shardModel(sharedModel('gemma3-tiny'), out, { tp: 1, pp: 1, vocab: 'replicated', attention: 'fused', format: 'tensorrt-llm' });
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  // models/gemma/config.py and modeling_utils.py Gemma3ConfigGroup, from gemma3-tiny's config.json.
  assert.equal(config.architecture, 'Gemma3ForCausalLM');
  assert.equal(config.inter_layernorms, true);
  assert.equal(config.query_pre_attn_scalar, 32);
  assert.equal(config.final_logit_softcapping, null);
  assert.equal(config._sliding_window_pattern, 6);
  assert.equal(config.rope_local_base_freq, 10000);
  assert.equal(config.sliding_window, 8);
  assert.equal(config.rotary_base, 1000000);
  assert.equal(config.head_size, 32);
  assert.equal(config.hidden_act, 'gelu_pytorch_tanh');
});

test('head_dim 8 shards to TensorRT-LLM with the default --attention: no ONNX graph, no GroupQueryAttention rule', async () => {
  const dir = tempDir();
  const config = {
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 64,
    vocab_size: 320,
    max_position_embeddings: 64,
    rope_theta: 10000,
    rope_scaling: null,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: 'float32' as const,
  };
  await writeSyntheticLlama(dir, { name: 'hd8', config, shards: 1 });
  const out = join(tempDir(), 'trt');
  for (const attention of ['fused', 'standard'] as const) {
    const report = await shardModel(join(dir, 'hd8'), `${out}-${attention}`, {
      tp: 2,
      vocab: 'replicated',
      attention,
      format: 'tensorrt-llm',
    });
    assert.equal(report.worldSize, 2);
    assert.equal(JSON.parse(readFileSync(join(`${out}-${attention}`, 'config.json'), 'utf8')).head_size, 8);
  }
});

test('sliceCols keeps the given columns of every row', () => {
  assert.deepEqual(sliceCols(Float32Array.from([1, 2, 3, 4, 5, 6]), 2, 3, { from: 1, to: 3 }), Float32Array.from([2, 3, 5, 6]));
});
