// TensorRT-LLM Phi-3 checkpoints at --tp 1, 2 and 4: every rank file against the layout TensorRT-LLM's Phi-3 model
// builds per rank (tensorrt_llm/models/phi3/model.py with layers/mlp.py MLP and layers/attention.py Attention), written
// here from the fused Hugging Face tensors, bit for bit; the rank files reassemble to qkv_proj and gate_up_proj; --pp
// is refused (Phi3Model has no pipeline stages). config.json equals Phi3Config.from_hugging_face's, written here from
// models/phi3/config.py, for phi3-tiny and for its weights under Phi-3.5 / Phi-4-mini's longrope context (131072).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { needsSharedModel, sharedModel, tempDir } from '../support.js';
import { Checkpoint, SafetensorsFile } from '../../src/formats/safetensors.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import type { DecoderSpec } from '../../src/core/spec.js';
import { shardModel } from '../../src/passes/shard/shard.js';
import { PHI3_LONGROPE, writePhi3Variant } from '../model/window-checkpoints.js';
import { cat, columns } from './tensor-blocks.js';

const PHI3 = sharedModel('phi3-tiny');
const skip = needsSharedModel('phi3-tiny');
let longrope: string | undefined;
/** phi3-tiny's weights with Phi-3.5 / Phi-4-mini's context keys (written once, on first use). */
const phi3Longrope = () => (longrope ??= writePhi3Variant(PHI3_LONGROPE));

type Json = Record<string, any>;
/**
 * The config.json TensorRT-LLM writes for a Phi3ForCausalLM Hugging Face config.json `hf` at `tp`: what
 * Phi3Config.from_hugging_face (models/phi3/config.py) sets from it, with PretrainedConfig's defaults (models/
 * modeling_utils.py: head_size = hidden_size // num_attention_heads, logits_dtype float32, no parallel embedding) for the
 * other keys llmopt writes. Longrope only from max_position_embeddings 128000: original_max_position_embeddings is the HF
 * Phi3Config's top-level key (default 4096), the factors rope_scaling's; rotary_scaling keeps Phi3Config's default None.
 */
function phi3ConfigFromHuggingFace(hf: Json, tp: number): Json {
  const config: Json = {
    architecture: hf.architectures[0],
    dtype: hf.torch_dtype,
    logits_dtype: 'float32',
    num_hidden_layers: hf.num_hidden_layers,
    num_attention_heads: hf.num_attention_heads,
    hidden_size: hf.hidden_size,
    intermediate_size: hf.intermediate_size,
    num_key_value_heads: hf.num_key_value_heads ?? hf.num_attention_heads,
    vocab_size: hf.vocab_size,
    max_position_embeddings: hf.max_position_embeddings,
    hidden_act: hf.hidden_act === 'silu' ? 'swiglu' : hf.hidden_act,
    head_size: Math.floor(hf.hidden_size / hf.num_attention_heads),
    rotary_pct: hf.partial_rotary_factor ?? 1,
    tie_word_embeddings: hf.tie_word_embeddings ?? false,
    rotary_base: hf.rope_theta,
    rotary_scaling: null,
    norm_epsilon: hf.rms_norm_eps,
    position_embedding_type: 'rope_gpt_neox',
    use_parallel_embedding: false,
    embedding_sharding_dim: 0,
    mapping: { world_size: tp, tp_size: tp, pp_size: 1 },
    quantization: { quant_algo: null, kv_cache_quant_algo: null },
  };
  if (hf.max_position_embeddings >= 128000) {
    config.original_max_position_embeddings = hf.original_max_position_embeddings ?? 4096;
    config.position_embedding_type = 'long_rope';
    config.longrope_scaling_short_factors = hf.rope_scaling.short_factor;
    config.longrope_scaling_long_factors = hf.rope_scaling.long_factor;
  }
  return config;
}

const rows = (m: Float32Array, cols: number, from: number, to: number) => m.slice(from * cols, to * cols);

/**
 * Rank `r` of `tp` as Phi3ForCausalLM holds it (hidden_act swiglu, no biases):
 * - attention.qkv: Attention's ColumnLinear of (H + 2 KV) head_dim rows over tp, [q_r; k_r; v_r]: the rank's H / tp
 *   query heads, then its KV / tp kv heads, or, when KV < tp, the one kv head its query heads attend with;
 * - mlp.fc: MLP's ColumnLinear of 2 ffn rows over tp; functional.swiglu chunks the rank's output into x and gate and
 *   returns x * silu(gate), so the rank holds [up rows of its ffn slice; gate rows of the same slice] (HF gate_up_proj
 *   is [gate; up]);
 * - attention.dense and mlp.proj: RowLinear, the rank's o_proj / down_proj input columns;
 * - norms, vocab_embedding (whole unless use_parallel_embedding) and ln_f on every rank; lm_head: ColumnLinear over
 *   pad_vocab_size(vocab, tp) rows, the tied embedding zero-padded and cut in tp row blocks.
 */
async function phi3Rank(source: Checkpoint, spec: DecoderSpec, tp: number, r: number, parallelEmbedding: boolean) {
  const { hiddenSize: h, headDim: d, numHeads: H, kvHeads: KV, intermediateSize: f, vocabSize: V } = spec;
  const out = new Map<string, Float32Array>();
  const read = (name: string) => source.readFloat32(name);
  const kvFrom = KV % tp === 0 ? (r * KV) / tp : Math.floor((r * KV) / tp);
  const kvTo = KV % tp === 0 ? ((r + 1) * KV) / tp : kvFrom + 1;
  for (let i = 0; i < spec.numLayers; i++) {
    const hf = `model.layers.${i}`;
    const p = `transformer.layers.${i}`;
    const qkv = await read(`${hf}.self_attn.qkv_proj.weight`);
    const q = rows(qkv, h, (r * H * d) / tp, ((r + 1) * H * d) / tp);
    const k = rows(qkv, h, H * d + kvFrom * d, H * d + kvTo * d);
    const v = rows(qkv, h, (H + KV) * d + kvFrom * d, (H + KV) * d + kvTo * d);
    out.set(`${p}.attention.qkv.weight`, cat([q, k, v]));
    out.set(
      `${p}.attention.dense.weight`,
      columns(await read(`${hf}.self_attn.o_proj.weight`), h, (r * H * d) / tp, ((r + 1) * H * d) / tp),
    );
    const gateUp = await read(`${hf}.mlp.gate_up_proj.weight`);
    const [from, to] = [(r * f) / tp, ((r + 1) * f) / tp];
    out.set(`${p}.mlp.fc.weight`, cat([rows(gateUp, h, f + from, f + to), rows(gateUp, h, from, to)]));
    out.set(`${p}.mlp.proj.weight`, columns(await read(`${hf}.mlp.down_proj.weight`), h, from, to));
    out.set(`${p}.input_layernorm.weight`, await read(`${hf}.input_layernorm.weight`));
    out.set(`${p}.post_layernorm.weight`, await read(`${hf}.post_attention_layernorm.weight`));
  }
  const embed = await read('model.embed_tokens.weight');
  out.set('transformer.vocab_embedding.weight', parallelEmbedding ? rows(embed, h, (r * V) / tp, ((r + 1) * V) / tp) : embed);
  out.set('transformer.ln_f.weight', await read('model.norm.weight'));
  const Vp = Math.ceil(V / tp);
  const padded = new Float32Array(Vp * tp * h);
  padded.set(embed);
  out.set('lm_head.weight', rows(padded, h, r * Vp, (r + 1) * Vp));
  return out;
}

for (const [name, model, tp, vocab] of [
  ['phi3-tiny', () => PHI3, 1, 'replicated'],
  ['phi3-tiny', () => PHI3, 2, 'replicated'],
  ['phi3-tiny', () => PHI3, 2, 'split'],
  // 2 kv heads over 4 ranks: one each, repeated.
  ['phi3-tiny', () => PHI3, 4, 'replicated'],
  ['phi3-tiny longrope 131072', phi3Longrope, 1, 'replicated'],
  ['phi3-tiny longrope 131072', phi3Longrope, 2, 'replicated'],
] as const) {
  test(`${name} tp ${tp} --vocab ${vocab}: rank files hold Phi3ForCausalLM's per-rank layout and reassemble`, { skip }, async () => {
    const dir = model();
    const out = join(tempDir(), 'trt');
    await shardModel(dir, out, { tp, vocab, attention: 'fused', format: 'tensorrt-llm' });
    const spec = readModelSpec(dir);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    const want = phi3ConfigFromHuggingFace(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), tp);
    assert.deepEqual(config, { ...want, use_parallel_embedding: vocab === 'split' });
    const source = await Checkpoint.open(dir);
    const { hiddenSize: h, headDim: d, numHeads: H, kvHeads: KV, intermediateSize: f } = spec;
    try {
      const files: SafetensorsFile[] = [];
      for (let r = 0; r < tp; r++) {
        const want = await phi3Rank(source, spec, tp, r, vocab === 'split');
        const file = await SafetensorsFile.open(join(out, `rank${r}.safetensors`));
        files.push(file);
        assert.deepEqual([...file.tensors.keys()].sort(), [...want.keys()].sort(), `rank ${r} tensor names`);
        for (const [tensor, values] of want) assert.deepEqual(await file.readFloat32(tensor), values, `rank ${r} ${tensor}`);
      }
      // Reassembly: every layer's fused Hugging Face tensors come back exactly.
      const kvPerRank = KV % tp === 0 ? KV / tp : 1;
      const qRows = (H / tp) * d;
      for (let i = 0; i < spec.numLayers; i++) {
        const parts = {
          q: [] as Float32Array[],
          k: [] as Float32Array[],
          v: [] as Float32Array[],
          gate: [] as Float32Array[],
          up: [] as Float32Array[],
        };
        for (const [r, file] of files.entries()) {
          const qkv = await file.readFloat32(`transformer.layers.${i}.attention.qkv.weight`);
          parts.q.push(rows(qkv, h, 0, qRows));
          // Repeated kv heads: each taken once, from the first rank holding it.
          if (KV % tp === 0 || r % (tp / KV) === 0) {
            parts.k.push(rows(qkv, h, qRows, qRows + kvPerRank * d));
            parts.v.push(rows(qkv, h, qRows + kvPerRank * d, qRows + 2 * kvPerRank * d));
          }
          const fc = await file.readFloat32(`transformer.layers.${i}.mlp.fc.weight`);
          parts.up.push(rows(fc, h, 0, f / tp));
          parts.gate.push(rows(fc, h, f / tp, (2 * f) / tp));
        }
        const hf = `model.layers.${i}`;
        assert.deepEqual(
          cat([...parts.q, ...parts.k, ...parts.v]),
          await source.readFloat32(`${hf}.self_attn.qkv_proj.weight`),
          `${hf} qkv`,
        );
        assert.deepEqual(cat([...parts.gate, ...parts.up]), await source.readFloat32(`${hf}.mlp.gate_up_proj.weight`), `${hf} gate_up`);
      }
      const head = cat(await Promise.all(files.map((file) => file.readFloat32('lm_head.weight'))));
      assert.deepEqual(head.subarray(0, spec.vocabSize * h), await source.readFloat32('model.embed_tokens.weight'));
      await Promise.all(files.map((file) => file.close()));
    } finally {
      await source.close();
    }
  });
}

test('phi3-tiny: Phi3ForCausalLM config keys, longrope at 131072 positions; --pp 2 refused naming the model rule', { skip }, async () => {
  const out = join(tempDir(), 'phi3');
  await shardModel(PHI3, out, { tp: 2, pp: 1, vocab: 'replicated', attention: 'fused', format: 'tensorrt-llm' });
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  // tensorrt_llm/models/phi3/config.py: swiglu for silu, rotary_pct from partial_rotary_factor, no LLaMA bias flags.
  assert.equal(config.architecture, 'Phi3ForCausalLM');
  assert.equal(config.hidden_act, 'swiglu');
  assert.equal(config.rotary_pct, 0.75);
  assert.equal(config.position_embedding_type, 'rope_gpt_neox');
  assert.equal(config.attn_bias, undefined);
  // Phi-3.5 / Phi-4-mini's context: the long_rope keys, the factor tables as given, no rotary_scaling.
  const long = join(tempDir(), 'long');
  await shardModel(phi3Longrope(), long, { tp: 1, vocab: 'replicated', attention: 'fused', format: 'tensorrt-llm' });
  const longConfig = JSON.parse(readFileSync(join(long, 'config.json'), 'utf8'));
  assert.equal(longConfig.position_embedding_type, 'long_rope');
  assert.equal(longConfig.original_max_position_embeddings, 4096);
  assert.equal(longConfig.max_position_embeddings, 131072);
  assert.deepEqual(longConfig.longrope_scaling_short_factors, PHI3_LONGROPE.rope_scaling.short_factor);
  assert.deepEqual(longConfig.longrope_scaling_long_factors, PHI3_LONGROPE.rope_scaling.long_factor);
  assert.equal(longConfig.rotary_scaling, null);
  assert.equal(longConfig.rotary_pct, 0.75);
  await assert.rejects(
    shardModel(PHI3, join(tempDir(), 'pp2'), { tp: 1, pp: 2, vocab: 'replicated', attention: 'fused', format: 'tensorrt-llm' }),
    /--format tensorrt-llm writes phi3 at --pp 1 only: TensorRT-LLM's Phi3Model \(models\/phi3\/model\.py\) has no pipeline stages/,
  );
});
