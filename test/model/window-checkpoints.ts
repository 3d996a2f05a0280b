// The tiny random Gemma 2 and Mistral-with-a-window checkpoints that ../shared has none of, shared by the tests that
// check them (sliding-window.test.ts against a float64 forward, the distillation gradients through the soft-caps), and
// phi3-tiny's weights under Phi-3.5 / Phi-4-mini's long-context config (the TensorRT-LLM writer's longrope tests).
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sharedModel, tempDir } from '../support.js';
import { writeSafetensors } from '../../src/formats/safetensors.js';

/** The config keys the float64 forward reads (Hugging Face names). */
export interface TinyConfig {
  model_type: 'gemma2' | 'mistral';
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  intermediate_size: number;
  vocab_size: number;
  rms_norm_eps: number;
  rope_theta: number;
  sliding_window: number;
  tie_word_embeddings: boolean;
  query_pre_attn_scalar?: number;
  attn_logit_softcapping?: number;
  final_logit_softcapping?: number;
}

export const GEMMA2: TinyConfig = {
  model_type: 'gemma2',
  hidden_size: 64,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  intermediate_size: 96,
  vocab_size: 512,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  sliding_window: 8,
  tie_word_embeddings: true,
  // Not head_dim, so the scale is checked; caps small enough that tanh bends the random model's scores and logits.
  query_pre_attn_scalar: 24,
  attn_logit_softcapping: 2.5,
  final_logit_softcapping: 4,
};

/** Gemma 2 with one kv head (TensorRT-LLM's Gemma converter then repeats it on every rank), vocabulary 514 = 2 x 257. */
export const GEMMA2_MQA: TinyConfig = { ...GEMMA2, num_key_value_heads: 1, vocab_size: 514 };

export const MISTRAL: TinyConfig = {
  model_type: 'mistral',
  hidden_size: 64,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 16,
  intermediate_size: 80,
  vocab_size: 512,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  sliding_window: 6,
  tie_word_embeddings: false,
};

export const isGemma = (c: TinyConfig) => c.model_type === 'gemma2';
/** Gemma 2's layer types: even layers slide. Mistral: every layer. */
export const slides = (c: TinyConfig, layer: number) => !isGemma(c) || layer % 2 === 0;

/** Deterministic normal samples (mulberry32 + Box-Muller), as float32 values. */
function samples(seed: number, n: number, std: number): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return Float32Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

/** Every tensor of the checkpoint with its shape and values. */
export function tensorsOf(c: TinyConfig): Map<string, { shape: number[]; data: Float32Array }> {
  const { hidden_size: h, head_dim: d, num_attention_heads: H, num_key_value_heads: KV, intermediate_size: f, vocab_size: V } = c;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  let seed = 1;
  const add = (name: string, shape: number[], std: number) =>
    out.set(name, {
      shape,
      data: samples(
        seed++,
        shape.reduce((a, b) => a * b, 1),
        std,
      ),
    });
  add('model.embed_tokens.weight', [V, h], isGemma(c) ? 0.2 : 1);
  const norms = isGemma(c)
    ? ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm']
    : ['input_layernorm', 'post_attention_layernorm'];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    // Gemma's norms scale by (1 + w): weights near 0. Llama's by w: weights near 1 are added below.
    for (const n of norms) add(`${p}.${n}.weight`, [h], 0.1);
    add(`${p}.self_attn.q_proj.weight`, [H * d, h], 0.25);
    add(`${p}.self_attn.k_proj.weight`, [KV * d, h], 0.25);
    add(`${p}.self_attn.v_proj.weight`, [KV * d, h], 0.2);
    add(`${p}.self_attn.o_proj.weight`, [h, H * d], 0.15);
    add(`${p}.mlp.gate_proj.weight`, [f, h], 0.2);
    add(`${p}.mlp.up_proj.weight`, [f, h], 0.2);
    add(`${p}.mlp.down_proj.weight`, [h, f], 0.15);
  }
  add('model.norm.weight', [h], 0.1);
  if (!c.tie_word_embeddings) add('lm_head.weight', [V, h], 0.2);
  if (!isGemma(c)) for (const [name, t] of out) if (name.endsWith('norm.weight')) t.data = t.data.map((x) => 1 + x);
  return out;
}

/** A Hugging Face folder of `c` in a temp dir: config.json, model.safetensors, qwen3-tiny's byte-level tokenizer. */
export async function writeCheckpoint(c: TinyConfig): Promise<string> {
  const dir = tempDir();
  const arch = isGemma(c) ? 'Gemma2ForCausalLM' : 'MistralForCausalLM';
  const extra = isGemma(c) ? { hidden_activation: 'gelu_pytorch_tanh', hidden_act: 'gelu_pytorch_tanh' } : { hidden_act: 'silu' };
  const config = {
    architectures: [arch],
    ...c,
    ...extra,
    max_position_embeddings: 128,
    torch_dtype: 'float32',
    bos_token_id: 510,
    eos_token_id: 509,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'])
    copyFileSync(join(sharedModel('qwen3-tiny'), f), join(dir, f));
  const tensors = tensorsOf(c);
  const entries = [...tensors].map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape }));
  await writeSafetensors(join(dir, 'model.safetensors'), entries, (name) => new Uint8Array(tensors.get(name)!.data.buffer.slice(0)));
  return dir;
}

/**
 * Phi-3.5-mini / Phi-4-mini's context keys for phi3-tiny (partial rotary 0.75: 24 of head_dim 32 rotate, so 12 factors
 * a table): longrope from 4096 to 131072 positions, a sliding_window past the context (so not windowed).
 */
export const PHI3_LONGROPE = {
  max_position_embeddings: 131072,
  original_max_position_embeddings: 4096,
  sliding_window: 262144,
  rope_scaling: {
    type: 'longrope',
    short_factor: [1, 1, 1.02, 1.05, 1.1, 1.2, 1.3, 1.45, 1.6, 1.8, 2, 2.3],
    long_factor: [1, 1.2, 1.6, 2.4, 3.5, 5, 7.5, 11, 16, 22, 30, 40],
  },
};

/** phi3-tiny from ../shared with config.json keys replaced by `keys` (an undefined value removes the key), in a temp dir. */
export function writePhi3Variant(keys: Record<string, unknown>): string {
  const dir = tempDir();
  const from = sharedModel('phi3-tiny');
  for (const f of readdirSync(from).filter((f) => !f.endsWith('.gguf') && f !== 'reference.json'))
    copyFileSync(join(from, f), join(dir, f));
  const config = { ...JSON.parse(readFileSync(join(from, 'config.json'), 'utf8')), ...keys };
  for (const [k, v] of Object.entries(keys)) if (v === undefined) delete config[k];
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return dir;
}
