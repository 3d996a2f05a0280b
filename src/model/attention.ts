// The attention forms of the decoder graph. fused and standard read and write the KV cache in the
// decoder convention: past_key_values.{i}.key|value and present.{i}.key|value, [B, kvH, T, D].
//   fused:    com.microsoft GroupQueryAttention, with rotary inside the op (what onnxruntime-genai emits) where the
//             op can apply it (gqaAppliesRotary); otherwise q/k norms and rotary are applied before it, do_rotary 0.
//   standard: ai.onnx ops only (any ONNX runtime), rotary and grouped heads spelled out.
//   inplace:  the runtime owns the cache: the graph reads kv_cache.{i}.* where it lies and returns only
//             the new entries (kv_new.{i}.*), which the runtime writes into the cache itself.
import { Elem, MS_DOMAIN, type GraphBuilder } from '../formats/onnx/graph.js';
import { layerHasRope, layerWindow, rotaryDimOf, type DecoderSpec } from '../core/spec.js';

/** Graph-wide values attention reads, computed once per graph by the decoder builder. */
export interface AttentionContext {
  /** fused: int32 [B] seqlens_k and int32 scalar total sequence length. */
  seqlensK?: string;
  totalSeqLen?: string;
  /** standard: [B, 1, 1, S, T] bool — may query s see key slot t. */
  allowed?: string;
  /** standard and inplace, and fused where the rotary is outside the op: [B, S, 1, D/2] cos and sin at each query's position. */
  cos?: string;
  sin?: string;
  /** inplace: the cache rows [B, S] of each query's position (RotaryEmbedding's position_ids). */
  rotaryRows?: string;
  /** Rotary caches [maxPositions, D/2] (initializers). */
  cosCache: string;
  sinCache: string;
  /** standard and inplace: `allowed` narrowed to the sliding window, when the spec has one (the builder swaps it in per layer). */
  allowedLocal?: string;
  /** The local rotary base's caches and cos/sin (Gemma 3's sliding layers); the builder swaps them in per layer. */
  localRotary?: { cosCache: string; sinCache: string; cos?: string; sin?: string; rotaryRows?: string };
  /**
   * Whether the sliding layers' caches hold only their window (the runtime trims them; see windowedCache in
   * model/decoder.ts). Their slots then follow attention_mask_local, not the positions attention_mask gives.
   */
  windowedCache?: boolean;
  /** windowedCache: seqlens_k / total_sequence_length (fused) or `allowed` (the others) over the sliding layers' slots. */
  local?: { seqlensK?: string; totalSeqLen?: string; allowed?: string };
}

export interface AttentionIO {
  layer: number;
  path: string;
  q: string; // [B, S, H*D]
  k: string; // [B, S, kvH*D]
  v: string; // [B, S, kvH*D]
  /** null in block graphs, which have no cache input. */
  pastKey: string | null;
  pastValue: string | null;
  presentKey: string;
  presentValue: string;
  /** Whether this layer applies the rotary embedding (SmolLM3's layers without it do not). */
  rope: boolean;
  /** q/k RMSNorm weights [D] applied per head before the rotary (Qwen3), or null. */
  qNorm: string | null;
  kNorm: string | null;
  /** The builder's RMSNorm over the last axis (its ops depend on the form). */
  rmsNorm: (x: string, gamma: string, path: string) => string;
  /** The layer's sliding window in tokens (fused: GroupQueryAttention's local_window_size), null: the whole context. */
  window: number | null;
}

/** q.k scale: spec.attentionScale (Gemma's query_pre_attn_scalar^-0.5) or 1/sqrt(head_dim). */
const attentionScale = (spec: DecoderSpec): number => spec.attentionScale ?? 1 / Math.sqrt(spec.headDim);

/**
 * Whether GroupQueryAttention can apply layer i's rotary embedding itself: its rotary kernels need cos/sin
 * rows of a multiple of 8 (head_dim a multiple of 16), and it rotates the projections as they come, so
 * nothing may stand between them and the rotary (q/k norms). It turns the whole head (no partial rotary) from
 * one cache indexed by position (not longrope's table chosen by sequence length). Elsewhere the graph rotates q and k first.
 */
export function gqaAppliesRotary(spec: DecoderSpec, layer: number, windowedCache = false): boolean {
  const whole = rotaryDimOf(spec) === spec.headDim && spec.ropeScaling?.type !== 'longrope';
  // A trimmed cache's seqlens_k counts its own slots, not the position: the op would rotate at the wrong one.
  const trimmed = windowedCache && layerWindow(spec, layer) !== null;
  return layerHasRope(spec, layer) && spec.headDim % 16 === 0 && !spec.qkNorm && whole && !trimmed;
}

/** Whether the fused graph needs the cos/sin at each position itself (some layer rotates outside GroupQueryAttention). */
export function fusedNeedsPositions(spec: DecoderSpec, windowedCache = false): boolean {
  return Array.from({ length: spec.numLayers }, (_, i) => layerHasRope(spec, i) && !gqaAppliesRotary(spec, i, windowedCache)).some(Boolean);
}

/** GroupQueryAttention: rotary, cache append, grouped heads and the causal/padding mask in one op. */
export function fusedAttention(g: GraphBuilder, spec: DecoderSpec, ctx: AttentionContext, io: AttentionIO): string {
  const inside = gqaAppliesRotary(spec, io.layer, ctx.windowedCache);
  let { q, k } = io;
  if (!inside && (io.rope || io.qNorm)) {
    // Norms and rotary on [B, S, heads, D], then back to the [B, S, heads*D] the op takes.
    const { numHeads: H, kvHeads: KV, headDim: D } = spec;
    const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
    const split = splitHeads(g, spec, io);
    const heads = preparedHeads(g, spec, ctx, io, split.q4, split.k4);
    q = g.op('Reshape', [heads.q4, i64(`/const/shape_0_0_${H * D}`, [0, 0, H * D])], `${io.path}/q/Merge`);
    k = g.op('Reshape', [heads.k4, i64(`/const/shape_0_0_${KV * D}`, [0, 0, KV * D])], `${io.path}/k/Merge`);
  }
  const rotaryInputs = inside ? [ctx.cosCache, ctx.sinCache] : [];
  const [out] = g.node(
    'GroupQueryAttention',
    [q, k, io.v, io.pastKey ?? '', io.pastValue ?? '', ctx.seqlensK!, ctx.totalSeqLen!, ...rotaryInputs],
    {
      name: `${io.path}/GroupQueryAttention`,
      outputs: [`${io.path}/GroupQueryAttention/output_0`, io.presentKey, io.presentValue],
      domain: MS_DOMAIN,
      attrs: {
        num_heads: { int: spec.numHeads },
        kv_num_heads: { int: spec.kvHeads },
        scale: { float: attentionScale(spec) },
        do_rotary: { int: inside ? 1 : 0 },
        rotary_interleaved: { int: 0 },
        // onnxruntime 1.30's CPU kernel lets query p see keys in (p - local_window_size, p], Hugging Face's window exactly
        // (checked on gemma3-tiny in prefill and decoding: W - 1 drops one key too many).
        local_window_size: { int: io.window === null ? -1 : io.window },
        // softcap: tanh(score / c) * c on the scaled scores, before the softmax (as Gemma 2 applies it).
        ...(spec.attnSoftcap === undefined ? {} : { softcap: { float: spec.attnSoftcap } }),
      },
    },
  );
  return out!;
}

/**
 * Rotate-half RoPE on [B, S, heads, D]: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin). With partial rotary
 * (Phi-4-mini) it turns the first rotaryDim dims, halves of rotaryDim/2 each, and passes the rest through, as Hugging
 * Face's apply_rotary_pos_emb does for Phi-3.
 */
function rotary(g: GraphBuilder, spec: DecoderSpec, ctx: AttentionContext, x: string, path: string): string {
  const dim = rotaryDimOf(spec);
  if (dim < spec.headDim) {
    const sizes = g.constant(`/const/rope_part_${dim}_${spec.headDim - dim}`, Elem.INT64, [2], [dim, spec.headDim - dim]);
    const [turned, kept] = g.node('Split', [x, sizes], { name: `${path}/SplitPartial`, outputs: 2, attrs: { axis: { int: -1 } } });
    const rotated = rotateHalf(g, ctx, turned!, dim, path);
    return g.op('Concat', [rotated, kept!], `${path}/ConcatPartial`, { axis: { int: -1 } });
  }
  return rotateHalf(g, ctx, x, dim, path);
}

/** Rotate-half over all `dim` dims of x's last axis. */
function rotateHalf(g: GraphBuilder, ctx: AttentionContext, x: string, dim: number, path: string): string {
  const half = dim / 2;
  const split = g.constant(`/const/rope_split_${half}`, Elem.INT64, [2], [half, half]);
  const [x1, x2] = g.node('Split', [x, split], { name: `${path}/Split`, outputs: 2, attrs: { axis: { int: -1 } } });
  const a = g.op(
    'Sub',
    [g.op('Mul', [x1!, ctx.cos!], `${path}/Mul_x1cos`), g.op('Mul', [x2!, ctx.sin!], `${path}/Mul_x2sin`)],
    `${path}/Sub`,
  );
  const b = g.op(
    'Add',
    [g.op('Mul', [x2!, ctx.cos!], `${path}/Mul_x2cos`), g.op('Mul', [x1!, ctx.sin!], `${path}/Mul_x1sin`)],
    `${path}/Add`,
  );
  return g.op('Concat', [a, b], `${path}/Concat`, { axis: { int: -1 } });
}

/** Queries [B, S, H, D] and keys [B, S, kvH, D] from the projections [B, S, heads*D]. */
function splitHeads(g: GraphBuilder, spec: DecoderSpec, io: AttentionIO): { q4: string; k4: string } {
  const { numHeads: H, kvHeads: KV, headDim: D } = spec;
  const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
  const q4 = g.op('Reshape', [io.q, i64(`/const/shape_0_0_${H}_${D}`, [0, 0, H, D])], `${io.path}/q/Reshape`); // [B,S,H,D]
  const k4 = g.op('Reshape', [io.k, i64(`/const/shape_0_0_${KV}_${D}`, [0, 0, KV, D])], `${io.path}/k/Reshape`); // [B,S,kvH,D]
  return { q4, k4 };
}

/** Queries and keys [B, S, heads, D] as attention scores read them: per-head norms, then rotary, where the layer has them. */
function preparedHeads(g: GraphBuilder, spec: DecoderSpec, ctx: AttentionContext, io: AttentionIO, q4: string, k4: string) {
  const p = io.path;
  if (io.qNorm) q4 = io.rmsNorm(q4, io.qNorm, `${p}/q_norm`);
  if (io.kNorm) k4 = io.rmsNorm(k4, io.kNorm, `${p}/k_norm`);
  if (io.rope) {
    q4 = rotary(g, spec, ctx, q4, `${p}/q/rotary`);
    k4 = rotary(g, spec, ctx, k4, `${p}/k/rotary`);
  }
  return { q4, k4 };
}

/** Prepared queries [B, kvH, G, S, D] and keys [B, S, kvH, D], values [B, S, kvH, D] (ai.onnx ops). */
function rotatedHeads(g: GraphBuilder, spec: DecoderSpec, ctx: AttentionContext, io: AttentionIO): { q5: string; kr: string; v4: string } {
  const { numHeads: H, kvHeads: KV, headDim: D } = spec;
  const G = H / KV;
  const p = io.path;
  const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
  const heads = splitHeads(g, spec, io);
  const v4 = g.op('Reshape', [io.v, i64(`/const/shape_0_0_${KV}_${D}`, [0, 0, KV, D])], `${p}/v/Reshape`);
  const { q4: qr, k4: kr } = preparedHeads(g, spec, ctx, io, heads.q4, heads.k4);
  const qT = g.op('Transpose', [qr], `${p}/q/Transpose`, { perm: { ints: [0, 2, 1, 3] } }); // [B,H,S,D]
  const q5 = g.op('Reshape', [qT, i64(`/const/shape_0_${KV}_${G}_-1_${D}`, [0, KV, G, -1, D])], `${p}/q/Group`); // [B,kvH,G,S,D]
  return { q5, kr, v4 };
}

/** Context [B, kvH, G, S, D] back to [B, S, H*D]. */
function mergeHeads(g: GraphBuilder, spec: DecoderSpec, ctx5: string, p: string): string {
  const { numHeads: H, headDim: D } = spec;
  const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
  const heads = g.op('Reshape', [ctx5, i64(`/const/shape_0_${H}_-1_${D}`, [0, H, -1, D])], `${p}/out/Reshape`); // [B,H,S,D]
  const bshd = g.op('Transpose', [heads], `${p}/out/Transpose`, { perm: { ints: [0, 2, 1, 3] } }); // [B,S,H,D]
  return g.op('Reshape', [bshd, i64(`/const/shape_0_0_${H * D}`, [0, 0, H * D])], `${p}/out/Merge`); // [B,S,H*D]
}

/** Softmax over key slots where `allowed` (masked slots get the lowest float, so a padding row stays finite). */
function maskedSoftmax(g: GraphBuilder, spec: DecoderSpec, ctx: AttentionContext, qk: string, p: string): string {
  const scaleName = spec.attentionScale === undefined ? `/const/attn_scale_${spec.headDim}` : `/const/attn_scale_${spec.attentionScale}`;
  const scale = g.constant(scaleName, Elem.FLOAT, [], [attentionScale(spec)]);
  let scores = g.op('Mul', [qk, scale], `${p}/QK/Scale`);
  if (spec.attnSoftcap !== undefined) {
    const c = g.constant(`/const/softcap_${spec.attnSoftcap}`, Elem.FLOAT, [], [spec.attnSoftcap]);
    scores = g.op('Mul', [g.op('Tanh', [g.op('Div', [scores, c], `${p}/Softcap/Div`)], `${p}/Softcap/Tanh`), c], `${p}/Softcap/Mul`);
  }
  const lowest = g.constant('/const/float_lowest', Elem.FLOAT, [], [-3.4028234663852886e38]);
  const masked = g.op('Where', [ctx.allowed!, scores, lowest], `${p}/Mask/Where`);
  return g.op('Softmax', [masked], `${p}/Softmax`, { axis: { int: -1 } });
}

/** Attention from ai.onnx ops: queries grouped as [B, kvH, G, S, D] so K/V are never repeated. */
export function standardAttention(g: GraphBuilder, spec: DecoderSpec, ctx: AttentionContext, io: AttentionIO): string {
  const p = io.path;
  const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
  const { q5, kr, v4 } = rotatedHeads(g, spec, ctx, io);
  const bhsd = { perm: { ints: [0, 2, 1, 3] } };
  const kNew = g.op('Transpose', [kr], `${p}/k/Transpose`, bhsd); // [B,kvH,S,D]
  const vNew = g.op('Transpose', [v4], `${p}/v/Transpose`, bhsd);
  // present = past ++ new along the sequence axis [B,kvH,T,D]; without a cache input, just the new.
  g.node(io.pastKey ? 'Concat' : 'Identity', io.pastKey ? [io.pastKey, kNew] : [kNew], {
    name: `${p}/present_key/Concat`,
    outputs: [io.presentKey],
    attrs: io.pastKey ? { axis: { int: 2 } } : undefined,
  });
  g.node(io.pastValue ? 'Concat' : 'Identity', io.pastValue ? [io.pastValue, vNew] : [vNew], {
    name: `${p}/present_value/Concat`,
    outputs: [io.presentValue],
    attrs: io.pastValue ? { axis: { int: 2 } } : undefined,
  });

  const axis2 = i64('/const/axes_2', [2]);
  const k5 = g.op('Unsqueeze', [io.presentKey, axis2], `${p}/k/Unsqueeze`); // [B,kvH,1,T,D]
  const v5 = g.op('Unsqueeze', [io.presentValue, axis2], `${p}/v/Unsqueeze`);
  const kT = g.op('Transpose', [k5], `${p}/k/TransposeT`, { perm: { ints: [0, 1, 2, 4, 3] } }); // [B,kvH,1,D,T]
  const probs = maskedSoftmax(g, spec, ctx, g.op('MatMul', [q5, kT], `${p}/QK/MatMul`), p); // [B,kvH,G,S,T]
  const ctx5 = g.op('MatMul', [probs, v5], `${p}/PV/MatMul`); // [B,kvH,G,S,D]
  return mergeHeads(g, spec, ctx5, p);
}

/**
 * Attention over a cache the runtime owns. The graph reads the cache where it lies — keys stored
 * transposed, [B, kvH, D, C], so no per-step transpose; values [B, kvH, C, D] — and attends to it and
 * to the step's own keys/values side by side: scores over [C slots ++ S new] with one softmax, then
 * the two value products summed. Nothing of size C is written: the outputs are the new keys/values
 * [B, kvH, S, D], which the runtime copies into the cache. (onnxruntime-node copies every output
 * back into a fresh JavaScript buffer, so a graph that returns the whole cache pays for it each step:
 * at batch 32 that copy cost more than the attention itself.)
 *
 * Queries stay [B, kvH, G, S, D] against the cache broadcast over G: in decoding each product is a
 * matrix-vector one, which the GEMM runs without repacking the cache, and the G heads of a group
 * read the same cached block one after the other, from the CPU's cache. Measured at batch 32 against
 * one [G*S, D] x [D, C] product per kv head: 9.3 against 10.6 ms of attention products a step.
 */
export function inplaceAttention(g: GraphBuilder, spec: DecoderSpec, ctx: AttentionContext, io: AttentionIO): string {
  const p = io.path;
  const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
  const { H, KV, D } = { H: spec.numHeads, KV: spec.kvHeads, D: spec.headDim };
  const bhsd = { perm: { ints: [0, 2, 1, 3] } };
  // com.microsoft RotaryEmbedding replaces the explicit Split/Mul/Sub/Add/Concat (one node per q and k): it computes
  // the rotate-half rotation of rotary() below, x1 cos - x2 sin and x2 cos + x1 sin, on the same cache rows
  // (rotaryRows: longrope's long table from maxPositions on; Gemma 3's local caches swapped in per layer) and turns
  // only rotary_embedding_dim dims (Phi-4-mini's partial rotary), so every architecture's inplace graph uses it.
  // The explicit form stays in the standard form (ai.onnx only) and where the fused form rotates outside its op.
  const heads = (x: string, n: number, name: 'q' | 'k', norm: string | null) => {
    let x4 = g.op('Reshape', [x, i64(`/const/shape_0_0_${n}_${D}`, [0, 0, n, D])], `${p}/${name}/Reshape`); // [B,S,n,D]
    if (norm) x4 = io.rmsNorm(x4, norm, `${p}/${name}_norm`);
    return x4;
  };
  const rope = (x: string, n: number, name: 'q' | 'k', output?: string) =>
    g.node('RotaryEmbedding', [x, ctx.rotaryRows!, ctx.cosCache, ctx.sinCache], {
      name: `${p}/${name}/RotaryEmbedding`,
      outputs: [output ?? `${p}/${name}/RotaryEmbedding/output_0`],
      domain: MS_DOMAIN,
      attrs: { interleaved: { int: 0 }, num_heads: { int: n }, rotary_embedding_dim: { int: rotaryDimOf(spec) } },
    })[0]!;
  const G = H / KV;
  let q5: string; // [B,kvH,G,S,D]
  if (io.qNorm || !io.rope) {
    let q = g.op('Transpose', [heads(io.q, H, 'q', io.qNorm)], `${p}/q/Transpose`, bhsd); // [B,H,S,D]
    if (io.rope) q = rope(q, H, 'q');
    q5 = g.op('Reshape', [q, i64(`/const/shape_0_${KV}_${G}_-1_${D}`, [0, KV, G, -1, D])], `${p}/q/Group`);
  } else {
    // Without per-head norms the rotary reads the projection [B, S, H*D] as it comes: one node fewer.
    const q5s = g.op('Reshape', [rope(io.q, H, 'q'), i64(`/const/shape_0_0_${KV}_${G}_${D}`, [0, 0, KV, G, D])], `${p}/q/Reshape`);
    q5 = g.op('Transpose', [q5s], `${p}/q/Transpose`, { perm: { ints: [0, 2, 3, 1, 4] } });
  }
  const k4 = heads(io.k, KV, 'k', io.kNorm);
  if (io.rope)
    rope(g.op('Transpose', [k4], `${p}/k/Transpose`, bhsd), KV, 'k', io.presentKey); // [B,kvH,S,D]
  else g.node('Transpose', [k4], { name: `${p}/k/Transpose`, outputs: [io.presentKey], attrs: bhsd });
  const v4 = g.op('Reshape', [io.v, i64(`/const/shape_0_0_${KV}_${D}`, [0, 0, KV, D])], `${p}/v/Reshape`);
  g.node('Transpose', [v4], { name: `${p}/v/Transpose`, outputs: [io.presentValue], attrs: bhsd });
  const axis2 = i64('/const/axes_2', [2]);
  const group = (x: string, name: string) => g.op('Unsqueeze', [x, axis2], `${p}/${name}/Unsqueeze`); // [B,kvH,1,..]
  const newKT = g.op('Transpose', [io.presentKey], `${p}/k/TransposeT`, { perm: { ints: [0, 1, 3, 2] } }); // [B,kvH,D,S]
  const qkCache = g.op('MatMul', [q5, group(io.pastKey!, 'cache_k')], `${p}/QK_cache/MatMul`); // [B,kvH,G,S,C]
  const qkNew = g.op('MatMul', [q5, group(newKT, 'new_k')], `${p}/QK_new/MatMul`); // [B,kvH,G,S,S]
  const qk = g.op('Concat', [qkCache, qkNew], `${p}/QK/Concat`, { axis: { int: -1 } }); // [B,kvH,G,S,C+S]
  const probs = maskedSoftmax(g, spec, ctx, qk, p);
  const sizes = probSplitSizes(g, ctx, qkCache, qkNew, p);
  const [pCache, pNew] = g.node('Split', [probs, sizes], { name: `${p}/probs/Split`, outputs: 2, attrs: { axis: { int: -1 } } });
  const ctxCache = g.op('MatMul', [pCache!, group(io.pastValue!, 'cache_v')], `${p}/PV_cache/MatMul`); // [B,kvH,G,S,D]
  const ctxNew = g.op('MatMul', [pNew!, group(io.presentValue, 'new_v')], `${p}/PV_new/MatMul`);
  // [B,kvH,G,S,D] -> [B,S,kvH,G,D] -> [B,S,H*D]: one Transpose of the grouped heads, no Reshape to [B,H,S,D] first.
  const ctx5 = g.op('Add', [ctxCache, ctxNew], `${p}/PV/Add`);
  const bs = g.op('Transpose', [ctx5], `${p}/out/Transpose`, { perm: { ints: [0, 3, 1, 2, 4] } });
  return g.op('Reshape', [bs, i64(`/const/shape_0_0_${H * D}`, [0, 0, H * D])], `${p}/out/Merge`);
}

/** Split sizes [C, S] of the probabilities, per graph and mask (layers over the same slots share them). */
const splitSizes = new WeakMap<GraphBuilder, Map<string, string>>();

/**
 * The probabilities' split at C (cache slots) and S (the step's tokens), from the two score tensors' last dimensions:
 * computed by the first layer over a mask's slots and reused by the others (the sliding layers of a trimmed cache
 * have their own mask and slots), so three shape nodes a graph rather than a layer.
 */
function probSplitSizes(g: GraphBuilder, ctx: AttentionContext, qkCache: string, qkNew: string, p: string): string {
  const memo = splitSizes.get(g) ?? new Map<string, string>();
  splitSizes.set(g, memo);
  const known = memo.get(ctx.allowed!);
  if (known) return known;
  const last = (x: string, name: string) => g.op('Shape', [x], name, { start: { int: -1 } });
  const sizes = g.op('Concat', [last(qkCache, `${p}/split_cache/Shape`), last(qkNew, `${p}/split_new/Shape`)], `${p}/split/Sizes`, {
    axis: { int: 0 },
  });
  memo.set(ctx.allowed!, sizes);
  return sizes;
}
