// Tiny random-weight Hugging Face checkpoints of what ../shared/models has none of (Gemma 2, Llama 3.x rope scaling,
// SmolLM2's 9/3 heads, Mistral with a sliding window, Phi-3 longrope, a 131,072 vocabulary), for llamacpp-oracle.test.ts.
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../../src/formats/safetensors.js';

/** One checkpoint: its config.json as the published models write theirs, and how llama.cpp is asked about it. */
export interface OracleCheckpoint {
  name: string;
  config: Record<string, unknown>;
  /** Runs of llama-dump-logits: the fixed id sequence, the greedy prompt and steps, llama.cpp's n_ctx. */
  runs: Array<{ label: string; ids: number; prompt: number; gen: number; nCtx: number }>;
  /** Max |logit difference| accepted against llama.cpp, and why when it is not 1e-3. */
  tolerance: number;
  note?: string;
}

// The byte-level tokenizer of ../shared/models/qwen3-tiny (ids 509-511 special): llama.cpp's converter accepts it.
const SPECIAL = { bos_token_id: 510, eos_token_id: 509, pad_token_id: 511 };
const COMMON = { attention_dropout: 0.0, initializer_range: 0.02, torch_dtype: 'float32', transformers_version: '4.51.3', use_cache: true };

const llamaConfig = (extra: Record<string, unknown>) => ({
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  attention_bias: false,
  mlp_bias: false,
  hidden_act: 'silu',
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  ...SPECIAL,
  ...COMMON,
  ...extra,
});

const standard = (nCtx = 64) => [{ label: '', ids: 48, prompt: 8, gen: 24, nCtx }];

export const ORACLE_CHECKPOINTS: OracleCheckpoint[] = [
  {
    // Gemma-2-2b's config keys. query_pre_attn_scalar = head_dim: llama.cpp ignores the key (it scales by
    // 1/sqrt(head_dim)), so only this value is comparable; sliding-window.test.ts checks another against float64.
    name: 'gemma2-tiny',
    config: {
      architectures: ['Gemma2ForCausalLM'],
      model_type: 'gemma2',
      attention_bias: false,
      attn_logit_softcapping: 2.5,
      cache_implementation: 'hybrid',
      final_logit_softcapping: 4.0,
      head_dim: 16,
      hidden_act: 'gelu_pytorch_tanh',
      hidden_activation: 'gelu_pytorch_tanh',
      hidden_size: 64,
      intermediate_size: 96,
      max_position_embeddings: 128,
      num_attention_heads: 4,
      num_hidden_layers: 4,
      num_key_value_heads: 2,
      query_pre_attn_scalar: 16,
      rms_norm_eps: 1e-6,
      rope_theta: 10000.0,
      sliding_window: 8,
      tie_word_embeddings: true,
      vocab_size: 512,
      ...SPECIAL,
      ...COMMON,
    },
    runs: standard(),
    tolerance: 1e-2,
    note: "llama.cpp's CPU GELU reads an fp16 table; llmopt computes Hugging Face's exact tanh-GELU",
  },
  {
    // Llama-3.2-1B's rope_scaling with original_max_position_embeddings 64 so that, at head_dim 16 and theta 5e5,
    // frequencies fall in all three bands (kept, smoothed, divided by factor); tied embeddings.
    name: 'llama32-tiny',
    config: llamaConfig({
      head_dim: 16,
      hidden_size: 64,
      intermediate_size: 128,
      max_position_embeddings: 1024,
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 2,
      rope_scaling: {
        factor: 32.0,
        high_freq_factor: 4.0,
        low_freq_factor: 1.0,
        original_max_position_embeddings: 64,
        rope_type: 'llama3',
      },
      rope_theta: 500000.0,
      tie_word_embeddings: true,
      vocab_size: 512,
    }),
    runs: standard(),
    tolerance: 1e-3,
  },
  {
    // SmolLM2-135M's attention: hidden 576, 9 heads of 64, 3 kv heads; two layers and a narrow MLP.
    name: 'smollm2-tiny',
    config: llamaConfig({
      head_dim: 64,
      hidden_size: 576,
      intermediate_size: 256,
      max_position_embeddings: 8192,
      num_attention_heads: 9,
      num_hidden_layers: 2,
      num_key_value_heads: 3,
      rope_scaling: null,
      rope_theta: 100000.0,
      tie_word_embeddings: true,
      vocab_size: 512,
    }),
    runs: standard(),
    tolerance: 1e-3,
  },
  {
    // Mistral-7B-v0.1's keys with a sliding window. llama.cpp's converter maps MistralForCausalLM to its llama
    // architecture, which has no sliding window: only sequences no longer than the window are comparable.
    name: 'mistral-tiny',
    config: {
      architectures: ['MistralForCausalLM'],
      model_type: 'mistral',
      head_dim: 16,
      hidden_act: 'silu',
      hidden_size: 64,
      intermediate_size: 80,
      max_position_embeddings: 128,
      num_attention_heads: 4,
      num_hidden_layers: 3,
      num_key_value_heads: 1,
      rms_norm_eps: 1e-5,
      rope_theta: 10000.0,
      sliding_window: 24,
      tie_word_embeddings: false,
      vocab_size: 512,
      ...SPECIAL,
      ...COMMON,
    },
    runs: [{ label: '', ids: 24, prompt: 8, gen: 16, nCtx: 24 }],
    tolerance: 1e-3,
    note: "llama.cpp's llama architecture ignores sliding_window: compared only up to the window (24 tokens)",
  },
  // llama.cpp picks Phi-3's factor table once per context (long when n_ctx, which it rounds up to a multiple of 256, exceeds
  // original_max_position_embeddings), Hugging Face per call (long when the call's last position + 1 exceeds it): so the
  // short table is checked with an original context of 256 and sequences below it, the long one with an original
  // context of 32 and sequences (and a greedy prompt) already past it. A sequence crossing it cannot be compared.
  phi3Longrope('phi3-longrope-short', 256, 1024, { label: 'short factors', ids: 48, prompt: 8, gen: 24, nCtx: 256 }),
  phi3Longrope('phi3-longrope-long', 32, 128, { label: 'long factors', ids: 48, prompt: 40, gen: 16, nCtx: 64 }),
  {
    // A 131,072-entry vocabulary (Mistral-Nemo's size) on a small body, tied; the tokenizer's 512 pieces are padded
    // by the converter ([PADn] tokens), as real checkpoints pad their embedding rows.
    name: 'bigvocab-tiny',
    config: llamaConfig({
      head_dim: 16,
      hidden_size: 32,
      intermediate_size: 64,
      max_position_embeddings: 256,
      num_attention_heads: 2,
      num_hidden_layers: 2,
      num_key_value_heads: 1,
      rope_scaling: null,
      rope_theta: 10000.0,
      tie_word_embeddings: true,
      vocab_size: 131072,
    }),
    runs: [{ label: '', ids: 16, prompt: 6, gen: 8, nCtx: 32 }],
    tolerance: 1e-3,
  },
];

/** Phi-4-mini's shape of longrope (partial rotary 0.75, GQA, long and short factor tables), tiny. */
function phi3Longrope(name: string, original: number, max: number, run: OracleCheckpoint['runs'][number]): OracleCheckpoint {
  return {
    name,
    config: {
      architectures: ['Phi3ForCausalLM'],
      model_type: 'phi3',
      attention_bias: false,
      embd_pdrop: 0.0,
      hidden_act: 'silu',
      hidden_size: 64,
      intermediate_size: 96,
      lm_head_bias: false,
      max_position_embeddings: max,
      mlp_bias: false,
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 2,
      original_max_position_embeddings: original,
      partial_rotary_factor: 0.75,
      resid_pdrop: 0.0,
      rms_norm_eps: 1e-5,
      rope_scaling: { long_factor: [1.5, 2.5, 4, 6, 9, 14], short_factor: [1, 1.1, 1.25, 1.5, 1.75, 2], type: 'longrope' },
      rope_theta: 10000.0,
      sliding_window: null,
      tie_word_embeddings: true,
      vocab_size: 512,
      ...SPECIAL,
      ...COMMON,
    },
    runs: [run],
    tolerance: 1e-3,
  };
}

/** Deterministic standard normal samples (mulberry32 + Box-Muller) times `std`, plus `offset`. */
function samples(seed: number, n: number, std: number, offset = 0): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return Float32Array.from({ length: n }, () => offset + std * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

/** Every tensor of `config` in Hugging Face names, with shapes and values (weights scaled by 1/sqrt(fan-in)). */
export function checkpointTensors(config: Record<string, unknown>): Map<string, { shape: number[]; data: Float32Array }> {
  const n = (k: string) => config[k] as number;
  const [h, H, KV, f, V] = [n('hidden_size'), n('num_attention_heads'), n('num_key_value_heads'), n('intermediate_size'), n('vocab_size')];
  const d = (config.head_dim as number | undefined) ?? h / H;
  const type = config.model_type as string;
  const gemma = type === 'gemma2';
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  let seed = 7;
  const add = (name: string, shape: number[], std: number, offset = 0) =>
    out.set(name, { shape, data: samples(seed++, shape[0]! * (shape[1] ?? 1), std, offset) });
  const w = (name: string, out: number, inp: number, gain: number) => add(name, [out, inp], gain / Math.sqrt(inp));
  // Gemma's norms scale by (1 + w), the others' by w.
  const norm = (name: string) => add(name, [h], 0.1, gemma ? 0 : 1);
  add('model.embed_tokens.weight', [V, h], gemma ? 0.2 : 1);
  for (let i = 0; i < n('num_hidden_layers'); i++) {
    const p = `model.layers.${i}`;
    norm(`${p}.input_layernorm.weight`);
    norm(`${p}.post_attention_layernorm.weight`);
    if (gemma) {
      norm(`${p}.pre_feedforward_layernorm.weight`);
      norm(`${p}.post_feedforward_layernorm.weight`);
    }
    if (type === 'phi3') {
      w(`${p}.self_attn.qkv_proj.weight`, (H + 2 * KV) * d, h, 2);
      w(`${p}.mlp.gate_up_proj.weight`, 2 * f, h, 1.6);
    } else {
      w(`${p}.self_attn.q_proj.weight`, H * d, h, 2);
      w(`${p}.self_attn.k_proj.weight`, KV * d, h, 2);
      w(`${p}.self_attn.v_proj.weight`, KV * d, h, 1.6);
      w(`${p}.mlp.gate_proj.weight`, f, h, 1.6);
      w(`${p}.mlp.up_proj.weight`, f, h, 1.6);
    }
    w(`${p}.self_attn.o_proj.weight`, h, H * d, 1.2);
    w(`${p}.mlp.down_proj.weight`, h, f, 1.2);
  }
  norm('model.norm.weight');
  if (!config.tie_word_embeddings) w('lm_head.weight', V, h, 1.6);
  return out;
}

/** Writes the Hugging Face folder `dir`: config.json, F32 model.safetensors, and `tokenizerFrom`'s tokenizer files. */
export async function writeOracleCheckpoint(spec: OracleCheckpoint, dir: string, tokenizerFrom: string): Promise<void> {
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(spec.config, null, 2)}\n`);
  for (const file of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'])
    copyFileSync(join(tokenizerFrom, file), join(dir, file));
  const tensors = checkpointTensors(spec.config);
  const entries = [...tensors].map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape }));
  await writeSafetensors(join(dir, 'model.safetensors'), entries, (name) => new Uint8Array(tensors.get(name)!.data.buffer.slice(0)));
}
