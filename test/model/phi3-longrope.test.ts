// Phi-3 longrope and partial rotary against a float64 forward with Hugging Face's semantics, computed here: a tiny
// synthetic phi3 checkpoint (fused qkv_proj / gate_up_proj) whose sequences cross original_max_position_embeddings.
// Hugging Face picks the long factors for a whole call when max(position_ids) + 1 > original_max_position_embeddings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../support.js';
import { writeSafetensors } from '../../src/formats/safetensors.js';
import { exportModel } from '../../src/passes/export.js';
import { DecoderModel } from '../../src/runtime/decoder.js';

const H = 64; // head_dim = H / HEADS = D
const HEADS = 4;
const KV = 2;
const D = 16;
const ROT = 8; // partial_rotary_factor 0.5
const F = 48;
const V = 64;
const LAYERS = 2;
const MAX = 64;
const ORIGINAL = 16;
const THETA = 10000;
const EPS = 1e-5;
const SHORT = [1, 1.25, 1.5, 2];
const LONG = [1.5, 3, 6, 12];
// Hugging Face's default: sqrt(1 + ln(max / original) / ln(original)).
const ATTENTION_FACTOR = Math.sqrt(1 + Math.log(MAX / ORIGINAL) / Math.log(ORIGINAL));

/** Deterministic weights (mulberry32), float32-representable so both forwards see the same values. */
function weights(): Map<string, { shape: number[]; data: Float32Array }> {
  let state = 12345;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (name: string, shape: number[], scale: number, offset = 0) =>
    out.set(name, {
      shape,
      data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => offset + scale * (2 * uniform() - 1)),
    });
  add('model.embed_tokens.weight', [V, H], 1);
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [H], 0.2, 1);
    add(`${p}.post_attention_layernorm.weight`, [H], 0.2, 1);
    add(`${p}.self_attn.qkv_proj.weight`, [(HEADS + 2 * KV) * D, H], 0.4);
    add(`${p}.self_attn.o_proj.weight`, [H, HEADS * D], 0.3);
    add(`${p}.mlp.gate_up_proj.weight`, [2 * F, H], 0.3);
    add(`${p}.mlp.down_proj.weight`, [H, F], 0.3);
  }
  add('model.norm.weight', [H], 0.2, 1);
  return out;
}

async function writeCheckpoint(dir: string, w: Map<string, { shape: number[]; data: Float32Array }>): Promise<void> {
  const config = {
    architectures: ['Phi3ForCausalLM'],
    model_type: 'phi3',
    hidden_size: H,
    num_attention_heads: HEADS,
    num_key_value_heads: KV,
    num_hidden_layers: LAYERS,
    intermediate_size: F,
    vocab_size: V,
    max_position_embeddings: MAX,
    original_max_position_embeddings: ORIGINAL,
    partial_rotary_factor: ROT / D,
    rope_theta: THETA,
    rope_scaling: { type: 'longrope', short_factor: SHORT, long_factor: LONG },
    rms_norm_eps: EPS,
    hidden_act: 'silu',
    tie_word_embeddings: true,
    sliding_window: null,
    torch_dtype: 'float32',
    bos_token_id: 1,
    eos_token_id: 2,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const entries = [...w].map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape }));
  await writeSafetensors(join(dir, 'model.safetensors'), entries, (name) => new Uint8Array(w.get(name)!.data.buffer), { format: 'pt' });
}

/** x [rows, n] times W [m, n] transposed, float64, W rows [from, from + m). */
function linear(x: Float64Array[], w: Float32Array, n: number, from: number, m: number): Float64Array[] {
  return x.map((row) => {
    const out = new Float64Array(m);
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += row[i]! * w[(from + j) * n + i]!;
      out[j] = s;
    }
    return out;
  });
}

function rmsNorm(x: Float64Array[], g: Float32Array): Float64Array[] {
  return x.map((row) => {
    const ms = row.reduce((a, v) => a + v * v, 0) / row.length;
    const r = 1 / Math.sqrt(ms + EPS);
    return row.map((v, i) => v * r * g[i]!);
  });
}

/** Rotate-half over the first ROT dims of each head at a position, with the given factors (cos/sin scaled). */
function rope(vec: Float64Array, heads: number, pos: number, factors: number[]): void {
  for (let h = 0; h < heads; h++) {
    const o = h * D;
    const x = vec.slice(o, o + ROT);
    for (let i = 0; i < ROT / 2; i++) {
      const inv = 1 / (factors[i]! * THETA ** ((2 * i) / ROT));
      const c = Math.cos(pos * inv) * ATTENTION_FACTOR;
      const s = Math.sin(pos * inv) * ATTENTION_FACTOR;
      vec[o + i] = x[i]! * c - x[i + ROT / 2]! * s;
      vec[o + i + ROT / 2] = x[i + ROT / 2]! * c + x[i]! * s;
    }
  }
}

/**
 * Float64 reference with a cache, called in `calls` (token counts): each call rotates its queries and new keys with the
 * factors Hugging Face picks for it (long when its last position + 1 > ORIGINAL); cached keys keep their rotation.
 * `force` overrides the choice (to check that the choice matters). Returns the logits of every position.
 */
function reference(w: Map<string, { data: Float32Array }>, ids: number[], calls: number[], force?: number[]): Float64Array[] {
  const t = (name: string) => w.get(name)!.data;
  const keys: Float64Array[][] = Array.from({ length: LAYERS }, () => []);
  const values: Float64Array[][] = Array.from({ length: LAYERS }, () => []);
  const logits: Float64Array[] = [];
  let start = 0;
  for (const n of calls) {
    const positions = Array.from({ length: n }, (_, s) => start + s);
    const factors = force ?? (start + n > ORIGINAL ? LONG : SHORT);
    const emb = t('model.embed_tokens.weight');
    let x = positions.map((p) => Float64Array.from(emb.subarray(ids[p]! * H, (ids[p]! + 1) * H)));
    for (let l = 0; l < LAYERS; l++) {
      const p = `model.layers.${l}`;
      const h = rmsNorm(x, t(`${p}.input_layernorm.weight`));
      const qkv = t(`${p}.self_attn.qkv_proj.weight`);
      const q = linear(h, qkv, H, 0, HEADS * D);
      const k = linear(h, qkv, H, HEADS * D, KV * D);
      const v = linear(h, qkv, H, (HEADS + KV) * D, KV * D);
      positions.forEach((pos, s) => {
        rope(q[s]!, HEADS, pos, factors);
        rope(k[s]!, KV, pos, factors);
        keys[l]!.push(k[s]!);
        values[l]!.push(v[s]!);
      });
      const ctx = positions.map((pos, s) => {
        const out = new Float64Array(HEADS * D);
        for (let head = 0; head < HEADS; head++) {
          const kvh = Math.floor(head / (HEADS / KV));
          const scores = keys[l]!.slice(0, pos + 1).map((key) => {
            let dot = 0;
            for (let i = 0; i < D; i++) dot += q[s]![head * D + i]! * key[kvh * D + i]!;
            return dot / Math.sqrt(D);
          });
          const m = Math.max(...scores);
          const e = scores.map((z) => Math.exp(z - m));
          const sum = e.reduce((a, b) => a + b, 0);
          e.forEach((pr, j) => {
            for (let i = 0; i < D; i++) out[head * D + i]! += (pr / sum) * values[l]![j]![kvh * D + i]!;
          });
        }
        return out;
      });
      const o = linear(ctx, t(`${p}.self_attn.o_proj.weight`), HEADS * D, 0, H);
      x = x.map((row, s) => row.map((val, i) => val + o[s]![i]!));
      const h2 = rmsNorm(x, t(`${p}.post_attention_layernorm.weight`));
      const gu = t(`${p}.mlp.gate_up_proj.weight`);
      const gate = linear(h2, gu, H, 0, F);
      const up = linear(h2, gu, H, F, F);
      const act = gate.map((row, s) => row.map((g, i) => (g / (1 + Math.exp(-g))) * up[s]![i]!));
      const down = linear(act, t(`${p}.mlp.down_proj.weight`), F, 0, H);
      x = x.map((row, s) => row.map((val, i) => val + down[s]![i]!));
    }
    logits.push(...linear(rmsNorm(x, t('model.norm.weight')), emb, H, 0, V));
    start += n;
  }
  return logits;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const IDS = Array.from({ length: 28 }, (_, i) => (i * 37 + 5) % V);

for (const form of ['fused', 'standard', 'inplace'] as const) {
  test(`phi3 longrope ${form}: logits equal a float64 forward, short factors within original_max and long past it`, async () => {
    const w = weights();
    const dir = tempDir();
    await writeCheckpoint(dir, w);
    const out = join(tempDir(), 'artifact');
    await exportModel(dir, out, { attention: form, layout: 'llmopt' });
    const model = await DecoderModel.open(out, { device: 'cpu' });
    const worst: Record<string, number> = {};
    // One call each: 12 tokens (short factors), 28 tokens (long factors for all of them, as Hugging Face does).
    for (const n of [12, 28]) {
      const ids = IDS.slice(0, n);
      const got = await model.forward(model.createCache(1, n), [ids]);
      const want = reference(w, ids, [n]);
      worst[`full ${n}`] = Math.max(...want.map((row, t) => maxDiff(got.at(0, t), row)));
      // The other table gives clearly different logits: the check sees which one was used.
      const other = reference(w, ids, [n], n > ORIGINAL ? SHORT : LONG);
      assert.ok(Math.max(...other.map((row, t) => maxDiff(row, want[t]!))) > 1e-2, 'the factor tables must matter');
    }
    // Prefill 12 then one token at a time to 20: steps from position 16 on switch to the long factors, cached keys stay.
    const cache = model.createCache(1, 20);
    const steps: Array<ArrayLike<number>> = [];
    const prefill = await model.forward(cache, [IDS.slice(0, 12)]);
    for (let t = 0; t < 12; t++) steps.push(prefill.at(0, t));
    for (let t = 12; t < 20; t++) steps.push((await model.forward(cache, [[IDS[t]!]])).at(0, 0));
    const want = reference(w, IDS.slice(0, 20), [12, 1, 1, 1, 1, 1, 1, 1, 1]);
    worst['decode 12+8'] = Math.max(...want.map((row, t) => maxDiff(steps[t]!, row)));
    console.log(`# phi3 longrope ${form}: max |logit - float64 reference| ${JSON.stringify(worst)} (tolerance 1e-3)`);
    for (const [k, v] of Object.entries(worst)) assert.ok(v < 1e-3, `${k}: ${v}`);
    await model.release();
  });
}
