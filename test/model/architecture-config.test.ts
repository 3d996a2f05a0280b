// config.json -> DecoderSpec for the Llama family, and refusals that list what is supported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { specFromConfig } from '../../src/model/architectures/index.js';
import { inverseFrequencies } from '../../src/model/rope.js';
import { InputError } from '../../src/core/errors.js';

const llama3 = {
  model_type: 'llama',
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  vocab_size: 128256,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: 'silu',
};

test('Llama 3.1: grouped-query heads, llama3 rope scaling, bf16, several eos ids', () => {
  const s = specFromConfig(llama3, 'config.json');
  assert.equal(s.kvHeads, 8);
  assert.equal(s.headDim, 128);
  assert.equal(s.weightDtype, 'bfloat16');
  assert.deepEqual(s.eosTokenIds, [128001, 128008, 128009]);
  assert.deepEqual(s.ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
});

test('generation_config.json eos ids take precedence; head_dim and biases are read', () => {
  const s = specFromConfig(
    { ...llama3, head_dim: 64, attention_bias: true, mlp_bias: true, rope_scaling: { type: 'linear', factor: 2 } },
    'config.json',
    { eos_token_id: 7 },
  );
  assert.equal(s.headDim, 64);
  assert.ok(Object.values(s.biases).every(Boolean));
  assert.deepEqual(s.eosTokenIds, [7]);
  assert.deepEqual(s.ropeScaling, { type: 'linear', factor: 2 });
});

test('Mistral: without a sliding window every layer sees the whole context; with one every layer slides', () => {
  const plain = specFromConfig({ ...llama3, model_type: 'mistral', sliding_window: null, rope_scaling: null }, 'c.json');
  assert.equal(plain.architecture, 'mistral');
  assert.equal(plain.slidingWindow, undefined);
  const windowed = specFromConfig({ ...llama3, model_type: 'mistral', sliding_window: 4096 }, 'c.json');
  assert.equal(windowed.slidingWindow, 4096);
  assert.equal(windowed.slidingLayers, undefined);
});

test('missing and malformed fields are named', () => {
  const { hidden_size: _h, ...noHidden } = llama3;
  assert.throws(
    () => specFromConfig(noHidden, 'x/config.json'),
    (e: Error) => e instanceof InputError && /x\/config\.json: "hidden_size" is missing/.test(e.message),
  );
  assert.throws(() => specFromConfig({ ...llama3, num_key_value_heads: 5 }, 'c.json'), /not a multiple of num_key_value_heads 5/);
  assert.throws(() => specFromConfig({ ...llama3, hidden_act: 'gelu' }, 'c.json'), /hidden_act" gelu is not supported/);
  assert.throws(() => specFromConfig({ ...llama3, torch_dtype: 'int8' }, 'c.json'), /torch_dtype" int8 is not supported/);
});

test('llama3 rope scaling: high frequencies kept, low ones divided by the factor, the band between blended', () => {
  const s = specFromConfig(llama3, 'config.json');
  const plain = inverseFrequencies({ ...s, ropeScaling: null });
  const scaled = inverseFrequencies(s);
  const wavelen = (f: number) => (2 * Math.PI) / f;
  let blended = 0;
  for (let i = 0; i < plain.length; i++) {
    const w = wavelen(plain[i]!);
    if (w < 8192 / 4) assert.equal(scaled[i], plain[i]);
    else if (w > 8192 / 1) assert.ok(Math.abs(scaled[i]! - plain[i]! / 8) <= 1e-7 * plain[i]!);
    else {
      blended++;
      assert.ok(scaled[i]! < plain[i]! && scaled[i]! > plain[i]! / 8);
    }
  }
  assert.ok(blended > 0);
  // transformers' default rope: inv_freq[i] = theta^(-2i/d).
  assert.ok(Math.abs(plain[1]! - 500000 ** (-2 / 128)) < 1e-6 * plain[1]!); // float32, as transformers computes it
});

test('Gemma 2: soft-caps 50 / 30 unless given, even layers sliding, (1 + w) norms, tanh-GELU, tied by default', () => {
  const gemma2 = {
    model_type: 'gemma2',
    architectures: ['Gemma2ForCausalLM'],
    hidden_size: 2304,
    intermediate_size: 9216,
    num_hidden_layers: 4,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    head_dim: 256,
    vocab_size: 256000,
    max_position_embeddings: 8192,
    query_pre_attn_scalar: 224,
    sliding_window: 4096,
    hidden_act: 'gelu_pytorch_tanh',
    hidden_activation: 'gelu_pytorch_tanh',
    torch_dtype: 'float32',
  };
  const s = specFromConfig(gemma2, 'config.json');
  assert.equal(s.architecture, 'gemma2');
  assert.deepEqual([s.attnSoftcap, s.finalSoftcap], [50, 30]);
  assert.deepEqual(s.slidingLayers, [true, false, true, false]);
  assert.equal(s.slidingWindow, 4096);
  assert.deepEqual([s.normOffset, s.sandwichNorms, s.activation, s.tiedEmbeddings], [1, true, 'gelu_tanh', true]);
  assert.equal(s.embeddingScale, 48);
  assert.equal(s.attentionScale, 224 ** -0.5);
  assert.equal(s.localRopeTheta, undefined);
  const uncapped = specFromConfig({ ...gemma2, attn_logit_softcapping: null, final_logit_softcapping: null }, 'config.json');
  assert.deepEqual([uncapped.attnSoftcap, uncapped.finalSoftcap], [undefined, undefined]);
});

test('Gemma 3 multimodal: text_config over Gemma3TextConfig defaults, bf16-rounded embedding scale, 5:1 layers, two rotary bases', () => {
  // The shape of google/gemma-3-4b-it's config.json: most text keys are left to the defaults.
  const s = specFromConfig(
    {
      architectures: ['Gemma3ForConditionalGeneration'],
      model_type: 'gemma3',
      torch_dtype: 'bfloat16',
      eos_token_id: [1, 106],
      text_config: {
        hidden_size: 2560,
        intermediate_size: 10240,
        model_type: 'gemma3_text',
        num_hidden_layers: 34,
        rope_scaling: { factor: 8.0, rope_type: 'linear' },
        sliding_window: 1024,
      },
      vision_config: { model_type: 'siglip_vision_model' },
    },
    'config.json',
  );
  assert.equal(s.architecture, 'gemma3');
  assert.deepEqual([s.numHeads, s.kvHeads, s.headDim, s.vocabSize], [8, 4, 256, 262208]);
  assert.equal(s.weightDtype, 'bfloat16');
  assert.deepEqual(s.eosTokenIds, [1, 106]);
  // sqrt(2560) = 50.596..., which bfloat16 holds as 50.5 (torch.tensor(hidden ** 0.5, dtype=bfloat16)).
  assert.equal(s.embeddingScale, 50.5);
  assert.equal(s.qkNorm, true);
  assert.equal(s.slidingWindow, 1024);
  assert.deepEqual(
    s.slidingLayers!.map((x, i) => (x ? -1 : i)).filter((i) => i >= 0),
    [5, 11, 17, 23, 29],
  );
  assert.deepEqual([s.ropeTheta, s.localRopeTheta], [1000000, 10000]);
  assert.deepEqual(s.ropeScaling, { type: 'linear', factor: 8 });
});
