// Gemma 2 (soft-capped attention and logits, alternating sliding/global layers, GQA's in-op rotary at head_dim 16) and
// Mistral with a sliding window, which ../shared has no checkpoint of: tiny random checkpoints written here, every
// attention form checked against an independent float64 forward with Hugging Face semantics written in this file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exportedArtifact, needsSharedModel } from '../support.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { GEMMA2, MISTRAL, isGemma, slides, tensorsOf, writeCheckpoint, type TinyConfig } from './window-checkpoints.js';
import { checkCachedDecoding, checkPaddedBatch, fullPass, maxDiff } from './window-checks.js';

/** y[o] = sum_i W[o, i] x[i] for W [out, in]. */
function matvec(w: Float32Array, x: number[], out: number): number[] {
  const n = x.length;
  return Array.from({ length: out }, (_, o) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += w[o * n + i]! * x[i]!;
    return s;
  });
}

/**
 * The float64 forward of Hugging Face's Gemma2ForCausalLM / MistralForCausalLM on one sequence: logits [S][V].
 * Sliding layers: query p attends to keys j with p - window < j <= p.
 */
function referenceLogits(c: TinyConfig, tensors: Map<string, { data: Float32Array }>, ids: number[]): number[][] {
  const W = (name: string) => tensors.get(name)!.data;
  const { hidden_size: h, head_dim: D, num_attention_heads: H, num_key_value_heads: KV, intermediate_size: F, vocab_size: V } = c;
  const gemma = isGemma(c);
  const norm = (x: number[], w: Float32Array) => {
    const r = 1 / Math.sqrt(x.reduce((a, v) => a + v * v, 0) / x.length + c.rms_norm_eps);
    return x.map((v, i) => v * r * (gemma ? 1 + w[i]! : w[i]!));
  };
  const cap = (x: number, k: number | undefined) => (k === undefined ? x : Math.tanh(x / k) * k);
  const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  const silu = (x: number) => x / (1 + Math.exp(-x));
  const rope = (v: number[], pos: number) => {
    const half = D / 2;
    const out = v.slice();
    for (let i = 0; i < half; i++) {
      const a = pos / c.rope_theta ** ((2 * i) / D);
      out[i] = v[i]! * Math.cos(a) - v[i + half]! * Math.sin(a);
      out[i + half] = v[i + half]! * Math.cos(a) + v[i]! * Math.sin(a);
    }
    return out;
  };
  const scale = (c.query_pre_attn_scalar ?? D) ** -0.5;
  let xs = ids.map((id) =>
    Array.from(W('model.embed_tokens.weight').subarray(id * h, (id + 1) * h), (v) => v * (gemma ? Math.fround(Math.sqrt(h)) : 1)),
  );
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const normed = xs.map((x) => norm(x, W(`${p}.input_layernorm.weight`)));
    const heads = (x: number[], n: number, pos: number, rot: boolean) =>
      Array.from({ length: n }, (_, hd) => (rot ? rope(x.slice(hd * D, (hd + 1) * D), pos) : x.slice(hd * D, (hd + 1) * D)));
    const q = normed.map((x, t) => heads(matvec(W(`${p}.self_attn.q_proj.weight`), x, H * D), H, t, true));
    const k = normed.map((x, t) => heads(matvec(W(`${p}.self_attn.k_proj.weight`), x, KV * D), KV, t, true));
    const v = normed.map((x, t) => heads(matvec(W(`${p}.self_attn.v_proj.weight`), x, KV * D), KV, t, false));
    const attn = q.map((qt, t) => {
      const out: number[] = [];
      for (let hd = 0; hd < H; hd++) {
        const g = Math.floor(hd / (H / KV));
        const keys = [...Array(t + 1).keys()].filter((j) => !slides(c, l) || t - j < c.sliding_window);
        const s = keys.map((j) => cap(qt[hd]!.reduce((a, val, i) => a + val * k[j]![g]![i]!, 0) * scale, c.attn_logit_softcapping));
        const m = Math.max(...s);
        const e = s.map((val) => Math.exp(val - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let i = 0; i < D; i++) out.push(keys.reduce((a, j, n) => a + (e[n]! / z) * v[j]![g]![i]!, 0));
      }
      return out;
    });
    let o = attn.map((a) => matvec(W(`${p}.self_attn.o_proj.weight`), a, h));
    if (gemma) o = o.map((x) => norm(x, W(`${p}.post_attention_layernorm.weight`)));
    xs = xs.map((x, t) => x.map((val, i) => val + o[t]![i]!));
    const pre = gemma ? `${p}.pre_feedforward_layernorm.weight` : `${p}.post_attention_layernorm.weight`;
    let mlp = xs.map((x) => {
      const n = norm(x, W(pre));
      const gate = matvec(W(`${p}.mlp.gate_proj.weight`), n, F);
      const up = matvec(W(`${p}.mlp.up_proj.weight`), n, F);
      return matvec(
        W(`${p}.mlp.down_proj.weight`),
        gate.map((gv, i) => (gemma ? gelu(gv) : silu(gv)) * up[i]!),
        h,
      );
    });
    if (gemma) mlp = mlp.map((x) => norm(x, W(`${p}.post_feedforward_layernorm.weight`)));
    xs = xs.map((x, t) => x.map((val, i) => val + mlp[t]![i]!));
  }
  const head = W(c.tie_word_embeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  return xs.map((x) => matvec(head, norm(x, W('model.norm.weight')), V).map((z) => cap(z, c.final_logit_softcapping)));
}

/** 30 ids: several windows long. */
const IDS = Array.from({ length: 30 }, (_, i) => (i * 37 + 11) % 500);

const skip = needsSharedModel('qwen3-tiny');
for (const [label, config] of [
  ['gemma2 (soft-caps, alternating windows)', GEMMA2],
  ['mistral (sliding window 6)', MISTRAL],
] as const) {
  const checkpoint = skip ? Promise.resolve('') : writeCheckpoint(config);
  for (const form of ['fused', 'standard', 'inplace'] as const) {
    const open = async () => DecoderModel.open(await exportedArtifact(await checkpoint, form), { device: 'cpu' });

    test(`${label} ${form}: logits match a float64 Hugging Face forward, cached decoding and padding agree`, { skip }, async () => {
      const ref = referenceLogits(config, tensorsOf(config), IDS);
      const model = await open();
      const logits = await fullPass(model, IDS);
      let worst = 0;
      ref.forEach((row, t) => (worst = Math.max(worst, maxDiff(logits.at(0, t), row))));
      console.log(`# ${label} ${form}: max |logit - float64 reference| = ${worst.toExponential(3)} (tolerance 1e-3)`);
      assert.ok(worst < 1e-3, `max diff ${worst}`);

      // Token by token through the cache, past the window, equals the full pass.
      await checkCachedDecoding(model, IDS, logits);

      // A right-padded batch (rows longer and shorter than the window) equals each row alone, prefill and decode.
      await checkPaddedBatch(model, IDS);
      await model.release();
    });
  }
}

test('the synthetic models exercise what they check: without the caps or the windows the float64 logits move', () => {
  const base = (c: TinyConfig) => referenceLogits(c, tensorsOf(c), IDS);
  const moved = (a: number[][], b: number[][]) => Math.max(...a.map((row, t) => maxDiff(row, b[t]!)));
  const g = base(GEMMA2);
  assert.ok(moved(g, base({ ...GEMMA2, attn_logit_softcapping: undefined })) > 1e-2, 'attention soft-cap inert');
  assert.ok(moved(g, base({ ...GEMMA2, final_logit_softcapping: undefined })) > 1e-2, 'final soft-cap inert');
  assert.ok(moved(g, base({ ...GEMMA2, sliding_window: 1000 })) > 1e-2, 'gemma2 window inert');
  assert.ok(moved(base(MISTRAL), base({ ...MISTRAL, sliding_window: 1000 })) > 1e-2, 'mistral window inert');
});
