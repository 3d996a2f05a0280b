// Bad input for the engine formats (quantize --format compressed-tensors / gptq / awq, shard --format tensorrt-llm):
// one line naming the module or option and the engine's rule, exit 2, nothing written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeSyntheticLlama } from '../../src/model/synthetic.js';
import { GQA, needsSharedModel, runCli, sharedModel, tempDir } from '../support.js';
import { GEMMA2_MQA, PHI3_LONGROPE, writeCheckpoint, writePhi3Variant } from '../model/window-checkpoints.js';

function failsCleanly(args: string[], message: RegExp): void {
  const parent = tempDir();
  const r = runCli([...args, '-o', join(parent, 'out')]);
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.deepEqual(readdirSync(parent), [], 'nothing written');
}

const CT = ['--to', 'int4', '--format', 'compressed-tensors'];

test('--strict refuses an --exclude that splits a fused group, naming the module and vLLM rule', () => {
  failsCleanly(
    ['quantize', GQA, ...CT, '--exclude', '*gate_proj', '--strict'],
    /--strict: model\.layers\.0\.mlp\.gate_up_proj fuses gate_proj, up_proj and --exclude keeps gate_proj in float; vLLM requires one scheme for all shards of a fused module \(compressed_tensors\/utils\.py, should_ignore_layer\)/,
  );
  failsCleanly(
    ['quantize', GQA, '--to', 'int4', '--format', 'gptq', '--exclude', '*k_proj', '--strict'],
    /self_attn\.qkv_proj fuses q_proj, k_proj, v_proj/,
  );
});

test('group sizes no vLLM kernel serves at the serve dtype are refused for compressed-tensors', () => {
  failsCleanly(
    ['quantize', GQA, ...CT, '--block-size', '16'],
    /--block-size 16: no vLLM kernel serves 4-bit symmetric groups of 16 at bfloat16 \(Marlin: group size 16 not in 32, 64, 128; Machete \(Hopper\): group size 16 not in 64, 128; Exllama: float16 only\)/,
  );
  // Exllama takes groups of 16 at float16, but without zero points.
  failsCleanly(
    ['quantize', GQA, ...CT, '--block-size', '16', '--serve-dtype', 'float16', '--asymmetric'],
    /--block-size 16: no vLLM kernel serves 4-bit asymmetric groups of 16 at float16 .*Exllama: no zero points/,
  );
  failsCleanly(['quantize', GQA, ...CT, '--serve-dtype', 'float32'], /--serve-dtype float32: choose one of bfloat16, float16/);
});

test('--strict refuses a module no vLLM kernel serves, naming the module, shape and each kernel rule', () => {
  // GQA's qkv_proj is 160 x 48: Marlin needs out % 64 and in % 128; Machete groups of 64 or 128; Exllama float16.
  failsCleanly(
    ['quantize', GQA, ...CT, '--strict'],
    /--strict: no vLLM kernel serves model\.layers\.0\.self_attn\.qkv_proj at bfloat16: out 160 x in 48: Marlin: out_features 160 % 64 != 0; Machete \(Hopper\): group size 32 not in 64, 128; Exllama: float16 only/,
  );
});

test('in_features no block of the scheme divides is refused before any work, naming the tensor and the fix', () => {
  failsCleanly(
    ['quantize', GQA, ...CT],
    /tensor "model\.layers\.0\.self_attn\.q_proj\.weight": in_features 48 is not a multiple of block size 32, which --format compressed-tensors and vLLM require; use a block size that divides it \(16\), or --exclude the module/,
  );
});

test('asymmetric zero points vLLM would misplace (a fused shard of 172 rows) are refused; so are GPTQ and AWQ shapes', async () => {
  const dir = tempDir();
  const config = {
    hidden_size: 64,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 172,
    vocab_size: 320,
    max_position_embeddings: 64,
    rope_theta: 10000,
    rope_scaling: null,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: 'float32' as const,
  };
  await writeSyntheticLlama(dir, { name: 'ffn172', config, shards: 1 });
  const model = join(dir, 'ffn172');
  failsCleanly(
    ['quantize', model, ...CT, '--asymmetric', '--exclude', '*down_proj'],
    /--asymmetric: model\.layers\.0\.mlp\.gate_proj has 172 output rows \(a shard of the fused gate_up_proj\), not a multiple of 8, so vLLM's loader cannot place its packed zero points/,
  );
  for (const format of ['gptq', 'awq'])
    failsCleanly(
      ['quantize', model, '--to', 'int4', '--format', format, '--exclude', '*down_proj'],
      new RegExp(`--format ${format}: model\\.layers\\.0\\.mlp\\.gate_proj has 172 output rows`),
    );
});

test('options a format cannot honour: awq at 8 bits, embeddings quantized for an engine format', () => {
  failsCleanly(['quantize', GQA, '--to', 'int8', '--format', 'awq'], /--to int8: --format awq stores int4 weights only/);
  failsCleanly(
    ['quantize', GQA, ...CT, '--quantize-embeddings'],
    /--quantize-embeddings: --format compressed-tensors keeps embeddings and lm_head in float/,
  );
});

test('shard --format tensorrt-llm: Gemma kv heads the converter would cut, Phi-3 pipeline stages, one line each', {
  skip: needsSharedModel('gemma3-tiny') ?? needsSharedModel('phi3-tiny'),
}, () => {
  failsCleanly(
    ['shard', sharedModel('gemma3-tiny'), '--tp', '4', '--format', 'tensorrt-llm'],
    /--format tensorrt-llm cannot split gemma3's 2 key\/value heads over --tp 4: TensorRT-LLM's Gemma converter \(models\/gemma\/convert\.py\) repeats a single kv head on every rank but cuts more into tp row blocks \(choose a --tp that divides 2\); use --format onnx/,
  );
  failsCleanly(
    ['shard', sharedModel('phi3-tiny'), '--tp', '2', '--pp', '2', '--format', 'tensorrt-llm'],
    /--format tensorrt-llm writes phi3 at --pp 1 only: TensorRT-LLM's Phi3Model \(models\/phi3\/model\.py\) has no pipeline stages/,
  );
});

test('shard --format tensorrt-llm: a Gemma vocabulary --tp does not divide is refused naming the converter rule', {
  skip: needsSharedModel('qwen3-tiny'),
}, async () => {
  const model = await writeCheckpoint(GEMMA2_MQA);
  failsCleanly(
    ['shard', model, '--tp', '4', '--format', 'tensorrt-llm'],
    /--format tensorrt-llm cannot split gemma2's lm_head over --tp 4: TensorRT-LLM's Gemma converter \(models\/gemma\/convert\.py\) cuts the vocabulary of 514 into tp equal row blocks \(choose a --tp that divides it\); use --format onnx/,
  );
});

test('shard --format tensorrt-llm: Phi-3 rope and windows Phi3Config would not carry, one line naming the rule', {
  skip: needsSharedModel('phi3-tiny'),
}, () => {
  const trt = (model: string) => ['shard', model, '--tp', '2', '--format', 'tensorrt-llm'];
  const rule = String.raw`TensorRT-LLM's Phi3Config \(models/phi3/config\.py\) takes longrope exactly when max_position_embeddings >= 128000`;
  // Longrope at a context Phi3Config treats as short: it would drop rope_scaling and rotate with plain rope.
  const short = { ...PHI3_LONGROPE, max_position_embeddings: 8192, sliding_window: null };
  failsCleanly(
    trt(writePhi3Variant(short)),
    new RegExp(
      `cannot hold phi3's longrope rope_scaling at max_position_embeddings 8192: ${rule} \\(below it, rope_scaling is dropped: plain rope\\); use --format onnx`,
    ),
  );
  // A long context without longrope: Phi3Config reads rope_scaling's factor tables there.
  failsCleanly(
    trt(writePhi3Variant({ ...PHI3_LONGROPE, rope_scaling: null })),
    new RegExp(`cannot hold phi3 at max_position_embeddings 131072 without rope_scaling: ${rule} and reads its short_factor / long_factor`),
  );
  // Hugging Face honours an explicit attention_factor; TensorRT-LLM computes its own from the two lengths.
  failsCleanly(
    trt(writePhi3Variant({ ...PHI3_LONGROPE, rope_scaling: { ...PHI3_LONGROPE.rope_scaling, attention_factor: 1.5 } })),
    /cannot hold phi3's longrope attention factor 1\.5: TensorRT-LLM scales cos and sin by sqrt\(1 \+ ln\(s\) \/ ln\(original\)\), s = max_position_embeddings \/ original_max_position_embeddings, = 1\.1902\d+ \(functional\.py RopeEmbeddingUtils\) and reads no attention_factor/,
  );
  // Phi-3-mini-4k's window (2047 of 4096): Phi3Config reads no sliding_window.
  failsCleanly(
    trt(writePhi3Variant({ max_position_embeddings: 4096, sliding_window: 2047 })),
    /cannot hold phi3's sliding_window 2047: TensorRT-LLM's Phi3Config reads none \(every layer would attend globally\); use --format onnx/,
  );
});
