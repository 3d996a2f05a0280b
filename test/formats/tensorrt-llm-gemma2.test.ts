// TensorRT-LLM's Gemma 2 checkpoint (tensorrt_llm/models/gemma): a tiny random Gemma2ForCausalLM sharded with
// --format tensorrt-llm against a rebuild, written here from that converter's rules (HfParser names, q/k/v rows
// concatenated, gate_proj as mlp.fc and up_proj as mlp.gate, every norm stored plus 1 in float32, the tied embedding as
// lm_head), bit for bit, and its config against GemmaConfig with the Gemma2ConfigGroup keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { needsSharedModel, tempDir } from '../support.js';
import { Checkpoint, SafetensorsFile } from '../../src/formats/safetensors.js';
import { shardModel } from '../../src/passes/shard/shard.js';
import { GEMMA2, writeCheckpoint } from '../model/window-checkpoints.js';
import { cat } from './tensor-blocks.js';

// writeCheckpoint borrows qwen3-tiny's tokenizer from ../shared.
const skip = needsSharedModel('qwen3-tiny');

/** One pipeline stage's rank file as load_gemma_weights (HfParser) writes it at tp 1: layers [from, to), renumbered. */
async function converterStage(source: Checkpoint, from: number, to: number, first: boolean, last: boolean) {
  const out = new Map<string, Float32Array>();
  const read = (name: string) => source.readFloat32(name);
  // "param = param + 1.0": input / post-attention / pre- and post-feedforward norms and model.norm.
  const norm = async (name: string) => (await read(name)).map((x) => x + 1);
  if (first) out.set('transformer.vocab_embedding.weight', await read('model.embed_tokens.weight'));
  for (let i = from; i < to; i++) {
    const hf = `model.layers.${i}`;
    const p = `transformer.layers.${i - from}`;
    out.set(`${p}.input_layernorm.weight`, await norm(`${hf}.input_layernorm.weight`));
    const qkv = ['q_proj', 'k_proj', 'v_proj'].map((m) => read(`${hf}.self_attn.${m}.weight`));
    out.set(`${p}.attention.qkv.weight`, cat(await Promise.all(qkv)));
    out.set(`${p}.attention.dense.weight`, await read(`${hf}.self_attn.o_proj.weight`));
    out.set(`${p}.post_layernorm.weight`, await norm(`${hf}.post_attention_layernorm.weight`));
    out.set(`${p}.pre_feedforward_layernorm.weight`, await norm(`${hf}.pre_feedforward_layernorm.weight`));
    out.set(`${p}.post_feedforward_layernorm.weight`, await norm(`${hf}.post_feedforward_layernorm.weight`));
    out.set(`${p}.mlp.fc.weight`, await read(`${hf}.mlp.gate_proj.weight`));
    out.set(`${p}.mlp.gate.weight`, await read(`${hf}.mlp.up_proj.weight`));
    out.set(`${p}.mlp.proj.weight`, await read(`${hf}.mlp.down_proj.weight`));
  }
  if (last) {
    out.set('transformer.ln_f.weight', await norm('model.norm.weight'));
    out.set('lm_head.weight', await read('model.embed_tokens.weight')); // tied
  }
  return out;
}

test('gemma2 --format tensorrt-llm (pp 2): Gemma2ForCausalLM config keys and rank files as the converter writes them', {
  skip,
}, async () => {
  const dir = await writeCheckpoint(GEMMA2);
  const out = join(tempDir(), 'trt');
  await shardModel(dir, out, { tp: 1, pp: 2, vocab: 'replicated', attention: 'fused', format: 'tensorrt-llm' });
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  // models/gemma/config.py GemmaConfig with modeling_utils.py Gemma2ConfigGroup, from the checkpoint's config.json.
  assert.equal(config.architecture, 'Gemma2ForCausalLM');
  assert.equal(config.inter_layernorms, true);
  assert.equal(config.query_pre_attn_scalar, GEMMA2.query_pre_attn_scalar);
  assert.equal(config.attn_logit_softcapping, GEMMA2.attn_logit_softcapping);
  assert.equal(config.final_logit_softcapping, GEMMA2.final_logit_softcapping);
  assert.equal(config.hidden_act, 'gelu_pytorch_tanh');
  assert.equal(config.head_size, GEMMA2.head_dim);
  assert.equal(config.rotary_base, GEMMA2.rope_theta);
  assert.equal(config.tie_word_embeddings, true);
  assert.deepEqual(config.mapping, { world_size: 2, tp_size: 1, pp_size: 2 });
  // Gemma 3's group keys are not Gemma 2's: the window is a run-time setting there.
  for (const key of ['_sliding_window_pattern', 'rope_local_base_freq', 'sliding_window']) assert.equal(config[key], undefined, key);
  assert.deepEqual(
    readdirSync(out)
      .filter((f) => f.endsWith('.safetensors'))
      .sort(),
    ['rank0.safetensors', 'rank1.safetensors'],
  );

  const source = await Checkpoint.open(dir);
  try {
    // Mapping.pp_layers: torch.tensor_split of 4 layers over 2 stages.
    for (const [rank, from, to] of [
      [0, 0, 2],
      [1, 2, 4],
    ] as const) {
      const want = await converterStage(source, from, to, rank === 0, rank === 1);
      const file = await SafetensorsFile.open(join(out, `rank${rank}.safetensors`));
      try {
        assert.deepEqual([...file.tensors.keys()].sort(), [...want.keys()].sort(), `rank ${rank} tensor names`);
        for (const [name, values] of want) assert.deepEqual(await file.readFloat32(name), values, `rank ${rank} ${name}`);
      } finally {
        await file.close();
      }
    }
  } finally {
    await source.close();
  }
});
