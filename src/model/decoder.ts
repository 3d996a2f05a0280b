// Builds the ONNX graph of a Llama-family decoder with a KV cache from a spec and a weight source:
// embedding -> layers (RMSNorm, attention, RMSNorm, SwiGLU MLP) -> final norm -> lm_head, with the spec's optional
// Gemma-style fields (norm offset, sandwich norms, GeGLU, scales, soft-caps, sliding windows, a local rotary base).
// Node names are paths (/model/layers.0/attn/...), initializers keep Hugging Face names.
import { Elem, MS_DOMAIN, type GraphBuilder } from '../formats/onnx/graph.js';
import { fusedAttention, fusedNeedsPositions, inplaceAttention, standardAttention, type AttentionContext } from './attention.js';
import { floatLinear, f32bytes, type LinearEmitter, type LinearLayer } from './linear.js';
import { rotaryCacheRows, rotaryCaches } from './rope.js';
import { floatEmbedding, gemmHead, type EmbeddingEmitter } from './embedding.js';
import { slotMask, windowMask } from './masks.js';
import {
  EMBED_TOKENS,
  FINAL_NORM,
  LM_HEAD,
  expectedTensors,
  layerHasRope,
  layerTensorNames,
  layerUsesLocalRope,
  layerWindow,
  rotaryDimOf,
  type DecoderSpec,
} from '../core/spec.js';
import type { WeightSource } from '../core/weights.js';
import { ATTENTION, cacheInputs, cacheOutputs, captureOutput, gramOutput, io, type AttentionForm, type CaptureName } from '../core/io.js';

export interface DecoderGraphOptions {
  attention: AttentionForm;
  /** How linear layers are emitted (float MatMul unless a pass supplies another). */
  linear?: LinearEmitter;
  /** How the token embedding (and a tied lm_head) are emitted (float Gather / Gemm unless a pass supplies another). */
  embedding?: EmbeddingEmitter;
  /** Called after each weight tensor is written, for progress reporting. */
  onTensor?: (name: string) => void;
  /** Expose the inputs of every linear layer: raw activations, their Gram matrices, or both. */
  captures?: CaptureMode;
  /** Expose each layer's output (the residual stream after it) as `hidden.layers.{i}` (distillation's hidden loss). */
  hiddenStates?: boolean;
  /**
   * Whole decoders of a model with sliding layers: those layers' caches hold only their window, which the runtime
   * trims; the graph takes attention_mask_local over their slots (core/io.ts). Off: every cache holds the whole context.
   */
  windowedCache?: boolean;
  /**
   * One product for q/k/v and one for gate/up (LinearEmitter.packed, where the emitter has it): fewer, larger
   * kernel calls. Default: in the inplace form (the CPU default, an inference artifact only, never shardable or
   * loaded by transformers.js); block, training and shard graphs keep one product per module (their captures and
   * slices are per module).
   */
  packProjections?: boolean;
}

/** Number of weight tensors the builder writes (for progress bars). */
export function weightTensorCount(spec: DecoderSpec): number {
  return expectedTensors(spec).size;
}

class DecoderGraph {
  private readonly linear: LinearEmitter;
  /** Whether this graph's sliding layers read trimmed caches (set by build: whole decoders with a cache only). */
  private windowed = false;

  constructor(
    readonly g: GraphBuilder,
    readonly spec: DecoderSpec,
    readonly weights: WeightSource,
    readonly opts: DecoderGraphOptions,
  ) {
    this.linear = opts.linear ?? floatLinear;
  }

  private async floatWeight(name: string, dims: number[]): Promise<string> {
    const w = this.g.initializer(name, Elem.FLOAT, dims, f32bytes(await this.weights.readFloat32(name)));
    this.opts.onTensor?.(name);
    return w;
  }

  /**
   * A norm's gamma: the stored weight, plus spec.normOffset in the graph when there is one (Gemma's (1 + w)).
   * The initializer keeps the checkpoint's value, so training graphs (distill) see and update the original
   * parameter; onnxruntime folds the Add into a constant when it loads an inference graph.
   */
  private async normWeight(name: string, dims: number[], path: string): Promise<string> {
    const w = await this.floatWeight(name, dims);
    const offset = this.spec.normOffset;
    if (offset === undefined) return w;
    const c = this.g.constant(`/const/norm_offset_${offset}`, Elem.FLOAT, [], [offset]);
    return this.g.op('Add', [w, c], `${path}/GammaOffset`);
  }

  /** Embedding rows times spec.embeddingScale (Gemma's sqrt(hidden), rounded to the weight dtype) where set. */
  private scaleEmbedding(x: string): string {
    const scale = this.spec.embeddingScale;
    if (scale === undefined) return x;
    const c = this.g.constant('/const/embedding_scale', Elem.FLOAT, [], [scale]);
    return this.g.op('Mul', [x, c], '/model/embed_tokens/Scale');
  }

  /** tanh(x / c) * c (Gemma 2's soft-capping of attention scores and logits). */
  private softcap(x: string, cap: number, path: string): string {
    const c = this.g.constant(`/const/softcap_${cap}`, Elem.FLOAT, [], [cap]);
    return this.g.op('Mul', [this.g.op('Tanh', [this.g.op('Div', [x, c], `${path}/Div`)], `${path}/Tanh`), c], `${path}/Mul`);
  }

  private async proj(x: string, path: string, module: string, inFeatures: number, outFeatures: number, bias: boolean): Promise<string> {
    const layer: LinearLayer = { path, module, inFeatures, outFeatures, bias };
    const y = await this.linear(this.g, this.weights, layer, x);
    this.tensorsWritten([layer]);
    return y;
  }

  private tensorsWritten(layers: LinearLayer[]): void {
    for (const l of layers) {
      this.opts.onTensor?.(`${l.module}.weight`);
      if (l.bias) this.opts.onTensor?.(`${l.module}.bias`);
    }
  }

  /** Linear layers on the same input: one packed product where the graph packs and the emitter can, else one each. */
  private async projs(x: string, path: string, layers: LinearLayer[]): Promise<string[]> {
    const pack = (this.opts.packProjections ?? this.opts.attention === 'inplace') && (this.opts.captures ?? 'none') === 'none';
    const packed = pack ? this.linear.packed : undefined;
    if (!packed) {
      const outs: string[] = [];
      for (const l of layers) outs.push(await this.proj(x, l.path, l.module, l.inFeatures, l.outFeatures, l.bias));
      return outs;
    }
    const outs = await packed(this.g, this.weights, layers, x, path);
    this.tensorsWritten(layers);
    return outs;
  }

  /** RMSNorm from ai.onnx ops: x / sqrt(mean(x^2) + eps) * gamma. */
  private rmsNorm(x: string, gamma: string, path: string): string {
    const g = this.g;
    const sq = g.op('Mul', [x, x], `${path}/Square`);
    const mean = g.op('ReduceMean', [sq], `${path}/ReduceMean`, { axes: { ints: [-1] }, keepdims: { int: 1 } });
    const eps = g.constant(`/const/rms_eps`, Elem.FLOAT, [], [this.spec.rmsNormEps]);
    const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [mean, eps], `${path}/AddEps`)], `${path}/Sqrt`)], `${path}/Reciprocal`);
    return g.op('Mul', [g.op('Mul', [x, inv], `${path}/Normalize`), gamma], `${path}/Scale`);
  }

  /** Pre-norm for a block. fused: Skip*LayerNormalization also returns the residual sum. */
  private norm(x: string, skip: string | null, gamma: string, path: string): { normed: string; residual: string } {
    const g = this.g;
    // Only the standard form keeps to ai.onnx; the others run on onnxruntime and use its fused norms.
    const fused = this.opts.attention !== 'standard';
    const eps = { float: this.spec.rmsNormEps };
    if (skip === null) {
      const normed = fused
        ? g.op('SimplifiedLayerNormalization', [x, gamma], `${path}/SimplifiedLayerNorm`, {
            axis: { int: -1 },
            epsilon: eps,
            stash_type: { int: 1 },
          })
        : this.rmsNorm(x, gamma, path);
      return { normed, residual: x };
    }
    if (fused) {
      const [normed, , , residual] = g.node('SkipSimplifiedLayerNormalization', [x, skip, gamma], {
        name: `${path}/SkipLayerNorm`,
        outputs: [`${path}/SkipLayerNorm/output_0`, '', '', `${path}/SkipLayerNorm/output_3`],
        domain: MS_DOMAIN,
        attrs: { epsilon: eps },
      });
      return { normed: normed!, residual: residual! };
    }
    const residual = g.op('Add', [x, skip], `${path}/ResidualAdd`);
    return { normed: this.rmsNorm(residual, gamma, path), residual };
  }

  /**
   * Graph inputs, cos/sin caches and the per-graph values attention reads. `tokens` is the tensor
   * whose second dimension is the new sequence length (input_ids, or the hidden states of a block graph).
   * `rotates`: whether any layer of the graph applies the rotary; a fused graph of SmolLM3 no-rope layers
   * only (a sharded block) holds no caches, which would be unused there. (The forms that take position_ids
   * keep them: the graph reads that input through them.)
   */
  private prologue(tokens: string, rotates = true): AttentionContext {
    const { g, spec } = this;
    g.input(io.attentionMask, Elem.INT64, ['batch_size', 'total_sequence_length']);
    if (this.windowed) g.input(io.attentionMaskLocal, Elem.INT64, ['batch_size', 'local_total_sequence_length']);
    const half = rotaryDimOf(spec) / 2;
    const { cos, sin } = rotaryCaches(spec);
    const rows = rotaryCacheRows(spec);
    rotates ||= ATTENTION[this.opts.attention].positionIds;
    const cosCache = rotates ? g.initializer('cos_cache', Elem.FLOAT, [rows, half], f32bytes(cos)) : '';
    const sinCache = rotates ? g.initializer('sin_cache', Elem.FLOAT, [rows, half], f32bytes(sin)) : '';
    // Sliding layers of a model with a local rotary base (Gemma 3) rotate from a second pair of caches.
    const local = rotates ? this.localRotaryCaches() : null;
    const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
    const scalar = (name: string, v: number) => g.constant(name, Elem.INT64, [], [v]);

    if (!ATTENTION[this.opts.attention].positionIds) {
      // GroupQueryAttention rotates by position itself from seqlens_k = (valid tokens per row) - 1 and
      // total_sequence_length, computed as onnxruntime-genai does.
      const p = '/model/attn_mask';
      const sum = g.op('ReduceSum', [io.attentionMask, i64('/const/axes_1', [1])], `${p}/ReduceSum`, { keepdims: { int: 0 } });
      const seqlens = g.op('Sub', [sum, scalar('/const/one_i64', 1)], `${p}/Sub`);
      const seqlensK = g.op('Cast', [seqlens], `${p}/seqlens_k/Cast`, { to: { int: Elem.INT32 } });
      const shape = g.op('Shape', [io.attentionMask], `${p}/Shape`);
      const total = g.op('Gather', [shape, scalar('/const/one_i64', 1)], `${p}/Gather`, { axis: { int: 0 } });
      const totalSeqLen = g.op('Cast', [total], `${p}/total_seq_len/Cast`, { to: { int: Elem.INT32 } });
      const windowed = this.windowed ? this.localContext(tokens) : {};
      if (!fusedNeedsPositions(spec, this.windowed) || !rotates) {
        return { seqlensK, totalSeqLen, cosCache, sinCache, ...(local ? { localRotary: local } : {}), ...windowed };
      }
      // Layers that rotate outside the op use the positions the op itself would: with S new tokens, row b's
      // query s sits at max(0, valid_b - S) + s (s in a first, right-padded prompt; seqlens_k when decoding).
      const S = g.op('Gather', [g.op('Shape', [tokens], `${p}/Shape_S`), scalar('/const/one_i64', 1)], `${p}/S`, { axis: { int: 0 } });
      const past = g.op('Max', [g.op('Sub', [sum, S], `${p}/PastLen`), scalar('/const/zero_i64', 0)], `${p}/PastLen/Max`); // [B]
      const steps = g.op('Range', [scalar('/const/zero_i64', 0), S, scalar('/const/one_i64', 1)], `${p}/Steps`); // [S]
      const positions = g.op(
        'Add',
        [
          g.op('Unsqueeze', [past, i64('/const/axes_1', [1])], `${p}/PastLen/Unsqueeze`),
          g.op('Unsqueeze', [steps, i64('/const/axes_0', [0])], `${p}/Steps/Unsqueeze`),
        ],
        `${p}/position_ids`,
      ); // [B,S]
      const localRotary = local
        ? { localRotary: { ...local, ...this.rotaryAt(positions, local.cosCache, local.sinCache, '/model/rotary_local', null) } }
        : {};
      return { seqlensK, totalSeqLen, cosCache, sinCache, ...this.rotaryAt(positions, cosCache, sinCache), ...localRotary, ...windowed };
    }

    g.input(io.positionIds, Elem.INT64, ['batch_size', 'sequence_length']);
    const { allowed, P, T } = slotMask(this.g, io.attentionMask, tokens, '/model/attn_mask');
    const windowed = this.windowed ? this.localContext(tokens) : {};
    const window = this.windowed ? undefined : spec.slidingWindow;
    const allowedLocal = window === undefined ? {} : { allowedLocal: windowMask(this.g, allowed, window, P, T) };
    const localRotary = local
      ? { localRotary: { ...local, ...this.rotaryAt(io.positionIds, local.cosCache, local.sinCache, '/model/rotary_local', null) } }
      : {};
    const rotary = this.rotaryAt(io.positionIds, cosCache, sinCache);
    return { allowed, ...rotary, cosCache, sinCache, ...allowedLocal, ...localRotary, ...windowed };
  }

  /**
   * The sliding layers' lengths over their trimmed caches, from attention_mask_local: GroupQueryAttention's
   * seqlens_k and total_sequence_length (fused), or the windowed `allowed` mask over their slots (the others).
   */
  private localContext(tokens: string): Pick<AttentionContext, 'windowedCache' | 'local'> {
    const { g, spec } = this;
    const mask = io.attentionMaskLocal;
    const p = '/model/attn_mask_local';
    if (!ATTENTION[this.opts.attention].positionIds) {
      const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
      const scalar = (name: string, v: number) => g.constant(name, Elem.INT64, [], [v]);
      const sum = g.op('ReduceSum', [mask, i64('/const/axes_1', [1])], `${p}/ReduceSum`, { keepdims: { int: 0 } });
      const seqlens = g.op('Sub', [sum, scalar('/const/one_i64', 1)], `${p}/Sub`);
      const seqlensK = g.op('Cast', [seqlens], `${p}/seqlens_k/Cast`, { to: { int: Elem.INT32 } });
      const total = g.op('Gather', [g.op('Shape', [mask], `${p}/Shape`), scalar('/const/one_i64', 1)], `${p}/Gather`, { axis: { int: 0 } });
      const totalSeqLen = g.op('Cast', [total], `${p}/total_seq_len/Cast`, { to: { int: Elem.INT32 } });
      return { windowedCache: true, local: { seqlensK, totalSeqLen } };
    }
    const { allowed, P, T } = slotMask(this.g, mask, tokens, p);
    return { windowedCache: true, local: { allowed: windowMask(this.g, allowed, spec.slidingWindow!, P, T, mask, `${p}/window`) } };
  }

  /** The local rotary caches (spec.localRopeTheta, unscaled) when some layer uses them, else null. */
  private localRotaryCaches(): { cosCache: string; sinCache: string } | null {
    const { g, spec } = this;
    if (!Array.from({ length: spec.numLayers }, (_, i) => layerUsesLocalRope(spec, i)).some(Boolean)) return null;
    const half = rotaryDimOf(spec) / 2;
    const { cos, sin } = rotaryCaches({ ...spec, ropeTheta: spec.localRopeTheta!, ropeScaling: null });
    return {
      cosCache: g.initializer('cos_cache_local', Elem.FLOAT, [spec.maxPositions, half], f32bytes(cos)),
      sinCache: g.initializer('sin_cache_local', Elem.FLOAT, [spec.maxPositions, half], f32bytes(sin)),
    };
  }

  /**
   * cos and sin [B, S, 1, rotaryDim/2] at positions [B, S], gathered from the caches, and the cache rows [B, S] they
   * come from (longrope's long table starts at maxPositions); `scaling` is the caches' rope scaling (the local
   * caches of Gemma 3 have none).
   */
  private rotaryAt(
    positions: string,
    cosCache: string,
    sinCache: string,
    r = '/model/rotary',
    scaling = this.spec.ropeScaling,
  ): { cos?: string; sin?: string; rotaryRows: string } {
    const g = this.g;
    const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
    const s = scaling;
    if (s?.type === 'longrope') {
      // Hugging Face switches the whole call to the long factors when max(position_ids) + 1 exceeds
      // original_max_position_embeddings (its longrope frequency update): rows maxPositions on hold that table.
      const scalar = (name: string, v: number) => g.constant(name, Elem.INT64, [], [v]);
      const last = g.op('ReduceMax', [positions], `${r}/longrope/ReduceMax`, { keepdims: { int: 0 } });
      const long = g.op(
        'Greater',
        [last, scalar(`/const/longrope_last_short_${s.originalMaxPositions - 1}`, s.originalMaxPositions - 1)],
        `${r}/longrope/Greater`,
      );
      const offset = g.op(
        'Mul',
        [
          g.op('Cast', [long], `${r}/longrope/Cast`, { to: { int: Elem.INT64 } }),
          scalar(`/const/max_positions_${this.spec.maxPositions}`, this.spec.maxPositions),
        ],
        `${r}/longrope/Offset`,
      );
      positions = g.op('Add', [positions, offset], `${r}/longrope/Rows`);
    }
    // The inplace form rotates with com.microsoft RotaryEmbedding, which gathers the rows itself.
    if (this.opts.attention === 'inplace') return { rotaryRows: positions };
    const axis2 = i64('/const/axes_2', [2]);
    const cosAt = g.op('Unsqueeze', [g.op('Gather', [cosCache, positions], `${r}/cos/Gather`, { axis: { int: 0 } }), axis2], `${r}/cos`);
    const sinAt = g.op('Unsqueeze', [g.op('Gather', [sinCache, positions], `${r}/sin/Gather`, { axis: { int: 0 } }), axis2], `${r}/sin`);
    return { cos: cosAt, sin: sinAt, rotaryRows: positions };
  }

  /**
   * Exposes the input of a layer's linear layers: the raw activations [B, S, F] and/or their Gram
   * matrix X^T X [F, F] over the valid (unpadded) tokens, which GPTQ, SparseGPT and Wanda need and
   * which onnxruntime's matmul computes far faster than a JavaScript loop.
   */
  private capture(layer: number, x: string, name: CaptureName): void {
    const mode = this.opts.captures ?? 'none';
    if (mode === 'none') return;
    const { g, spec } = this;
    const features = name === 'down_in' ? spec.intermediateSize : name === 'o_in' ? spec.numHeads * spec.headDim : spec.hiddenSize;
    const p = `/capture/layers.${layer}/${name}`;
    if (mode === 'raw' || mode === 'both') {
      g.node('Identity', [x], { name: `${p}/Identity`, outputs: [captureOutput(layer, name)] });
      g.output(captureOutput(layer, name), Elem.FLOAT, ['batch_size', 'sequence_length', features]);
    }
    if (mode === 'gram' || mode === 'both') {
      // Padding rows are zeroed so they add nothing to X^T X. Block graphs have no past: mask is [B, S].
      const i64 = (n: string, v: number[]) => g.constant(n, Elem.INT64, [v.length], v);
      const maskF = g.op(
        'Unsqueeze',
        [g.op('Cast', [io.attentionMask], `${p}/MaskCast`, { to: { int: Elem.FLOAT } }), i64('/const/axes_-1', [-1])],
        `${p}/MaskUnsqueeze`,
      ); // [B,S,1]
      const rows = g.op(
        'Reshape',
        [g.op('Mul', [x, maskF], `${p}/Masked`), i64(`/const/shape_-1_${features}`, [-1, features])],
        `${p}/Rows`,
      ); // [B*S, F]
      const gram = g.op('MatMul', [g.op('Transpose', [rows], `${p}/Transpose`, { perm: { ints: [1, 0] } }), rows], `${p}/Gram`);
      g.node('Identity', [gram], { name: `${p}/GramOut`, outputs: [gramOutput(layer, name)] });
      g.output(gramOutput(layer, name), Elem.FLOAT, [features, features]);
    }
  }

  /** Attention block of layer i on its normed input: q/k/v, attention over the cache, o_proj. */
  private async attention(i: number, ctx: AttentionContext, normed: string, cache: boolean): Promise<string> {
    const { g, spec } = this;
    const { hiddenSize: h, numHeads, kvHeads, headDim: d } = spec;
    const n = layerTensorNames(i);
    const path = `/model/layers.${i}`;
    this.capture(i, normed, 'attn_in');
    const b = spec.biases;
    const [q, k, v] = (await this.projs(normed, `${path}/attn/qkv_proj`, [
      { path: `${path}/attn/q_proj`, module: n.q, inFeatures: h, outFeatures: numHeads * d, bias: b.q },
      { path: `${path}/attn/k_proj`, module: n.k, inFeatures: h, outFeatures: kvHeads * d, bias: b.k },
      { path: `${path}/attn/v_proj`, module: n.v, inFeatures: h, outFeatures: kvHeads * d, bias: b.v },
    ])) as [string, string, string];
    const qNorm = spec.qkNorm ? await this.normWeight(n.qNorm, [d], `${path}/attn/q_norm`) : null;
    const kNorm = spec.qkNorm ? await this.normWeight(n.kNorm, [d], `${path}/attn/k_norm`) : null;
    const form = this.opts.attention;
    const inplace = form === 'inplace';
    if (inplace && !cache) throw new Error('the inplace attention form needs a cache');
    const [pastKey, pastValue] = cache ? cacheInputs(form, i) : [null, null];
    const [presentKey, presentValue] = cache ? cacheOutputs(form, i) : [`${path}/attn/present_key`, `${path}/attn/present_value`];
    const rmsNorm = (x: string, gamma: string, normPath: string) => this.norm(x, null, gamma, normPath).normed;
    const rope = layerHasRope(spec, i);
    const window = layerWindow(spec, i);
    const aio = {
      layer: i,
      path: `${path}/attn`,
      q,
      k,
      v,
      pastKey,
      pastValue,
      presentKey,
      presentValue,
      rope,
      qNorm,
      kNorm,
      rmsNorm,
      window,
    };
    const attn = (form === 'fused' ? fusedAttention : inplace ? inplaceAttention : standardAttention)(
      g,
      spec,
      this.layerContext(ctx, i),
      aio,
    );
    if (cache) {
      // A graph-owned cache comes back whole; a runtime-owned one gets only the step's new entries.
      const local = this.windowed && window !== null ? 'local_' : '';
      const seq = ATTENTION[form].cacheOwner === 'runtime' ? 'sequence_length' : `${local}total_sequence_length`;
      g.output(aio.presentKey, Elem.FLOAT, ['batch_size', kvHeads, seq, d]);
      g.output(aio.presentValue, Elem.FLOAT, ['batch_size', kvHeads, seq, d]);
    }
    this.capture(i, attn, 'o_in');
    return this.proj(attn, `${path}/attn/o_proj`, n.o, numHeads * d, h, b.o);
  }

  private silu(x: string, path: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [x], `${path}/Sigmoid`)], `${path}/Mul`);
  }

  /** GELU, tanh approximation (gelu_pytorch_tanh): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in ai.onnx ops. */
  private geluTanh(x: string, path: string): string {
    const g = this.g;
    const c = (name: string, v: number) => g.constant(`/const/gelu_${name}`, Elem.FLOAT, [], [v]);
    const cube = g.op('Mul', [g.op('Mul', [x, x], `${path}/Square`), x], `${path}/Cube`);
    const inner = g.op('Add', [x, g.op('Mul', [cube, c('coef', 0.044715)], `${path}/CubeScale`)], `${path}/Inner`);
    const t = g.op('Tanh', [g.op('Mul', [inner, c('sqrt_2_over_pi', Math.sqrt(2 / Math.PI))], `${path}/TanhIn`)], `${path}/Tanh`);
    const half = g.op('Mul', [x, c('half', 0.5)], `${path}/Half`);
    return g.op('Mul', [half, g.op('Add', [t, c('one', 1)], `${path}/OnePlus`)], `${path}/Mul`);
  }

  /** The context layer i attends with: the local rotary caches and the windowed mask where the layer slides. */
  private layerContext(ctx: AttentionContext, i: number): AttentionContext {
    let out = ctx;
    if (layerUsesLocalRope(this.spec, i)) out = { ...out, ...ctx.localRotary! };
    if (layerWindow(this.spec, i) !== null && ctx.allowedLocal) out = { ...out, allowed: ctx.allowedLocal };
    // A trimmed cache: the layer's slots are attention_mask_local's.
    if (layerWindow(this.spec, i) !== null && ctx.local) out = { ...out, ...ctx.local };
    return out;
  }

  /** SwiGLU MLP block of layer i on its normed input: down(silu(gate(x)) * up(x)). */
  private async mlp(i: number, normed: string): Promise<string> {
    const { g, spec } = this;
    const { hiddenSize: h, intermediateSize: f } = spec;
    const n = layerTensorNames(i);
    const path = `/model/layers.${i}`;
    this.capture(i, normed, 'mlp_in');
    const b = spec.biases;
    const [gate, up] = (await this.projs(normed, `${path}/mlp/gate_up_proj`, [
      { path: `${path}/mlp/gate_proj`, module: n.gate, inFeatures: h, outFeatures: f, bias: b.gate },
      { path: `${path}/mlp/up_proj`, module: n.up, inFeatures: h, outFeatures: f, bias: b.up },
    ])) as [string, string];
    const act = spec.activation === 'gelu_tanh' ? this.geluTanh(gate, `${path}/mlp/act`) : this.silu(gate, `${path}/mlp/act`);
    const hidden = g.op('Mul', [act, up], `${path}/mlp/Mul`);
    this.capture(i, hidden, 'down_in');
    return this.proj(hidden, `${path}/mlp/down_proj`, n.down, f, h, b.down);
  }

  /**
   * One decoder layer. The residual stream is `x`, and `pending` the previous block's output not yet
   * added to it (the fused form adds it inside SkipSimplifiedLayerNormalization). With `cache`
   * false (block graphs) the layer has no past input and its present is internal.
   */
  private async layer(
    i: number,
    ctx: AttentionContext,
    x: string,
    pending: string | null,
    cache: boolean,
  ): Promise<{ x: string; pending: string }> {
    const h = this.spec.hiddenSize;
    const n = layerTensorNames(i);
    const path = `/model/layers.${i}`;
    const inNorm = await this.normWeight(n.inputNorm, [h], `${path}/input_layernorm`);
    const pre = this.norm(pending ?? x, pending === null ? null : x, inNorm, `${path}/input_layernorm`);
    const o = await this.attentionBlockOutput(i, await this.attention(i, ctx, pre.normed, cache));
    const mlpNormName = this.spec.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm';
    const postNorm = await this.normWeight(this.mlpNormTensor(i), [h], `${path}/${mlpNormName}`);
    const post = this.norm(o, pre.residual, postNorm, `${path}/${mlpNormName}`);
    return { x: post.residual, pending: await this.mlpBlockOutput(i, await this.mlp(i, post.normed)) };
  }

  /** The norm before layer i's MLP: post_attention_layernorm in Llama, pre_feedforward_layernorm with sandwich norms. */
  private mlpNormTensor(i: number): string {
    const n = layerTensorNames(i);
    return this.spec.sandwichNorms ? n.preFeedforwardNorm : n.postAttentionNorm;
  }

  /** The attention block's output as the residual stream adds it: normed by post_attention_layernorm with sandwich norms. */
  private async attentionBlockOutput(i: number, o: string): Promise<string> {
    if (!this.spec.sandwichNorms) return o;
    const path = `/model/layers.${i}/post_attention_layernorm`;
    return this.norm(o, null, await this.normWeight(layerTensorNames(i).postAttentionNorm, [this.spec.hiddenSize], path), path).normed;
  }

  /** The MLP block's output as the residual stream adds it: normed by post_feedforward_layernorm with sandwich norms. */
  private async mlpBlockOutput(i: number, m: string): Promise<string> {
    if (!this.spec.sandwichNorms) return m;
    const path = `/model/layers.${i}/post_feedforward_layernorm`;
    return this.norm(m, null, await this.normWeight(layerTensorNames(i).postFeedforwardNorm, [this.spec.hiddenSize], path), path).normed;
  }

  /** Declares the cache inputs of layers [from, to): past_key_values, or kv_cache in the inplace form. */
  private pastInputs(from: number, to: number): void {
    const { kvHeads, headDim: d } = this.spec;
    for (let i = from; i < to; i++) {
      const [key, value] = cacheInputs(this.opts.attention, i);
      const local = this.windowed && layerWindow(this.spec, i) !== null ? 'local_' : '';
      if (ATTENTION[this.opts.attention].cacheOwner === 'runtime') {
        this.g.input(key, Elem.FLOAT, ['batch_size', kvHeads, d, `${local}cache_slots`]);
        this.g.input(value, Elem.FLOAT, ['batch_size', kvHeads, `${local}cache_slots`, d]);
        continue;
      }
      this.g.input(key, Elem.FLOAT, ['batch_size', kvHeads, `${local}past_sequence_length`, d]);
      this.g.input(value, Elem.FLOAT, ['batch_size', kvHeads, `${local}past_sequence_length`, d]);
    }
  }

  /** Final norm and lm_head: logits [B, S, V]. `embedded` says whether this graph already holds the embedding. */
  private async head(x: string, pending: string | null, embedding: EmbeddingEmitter, embedded: boolean): Promise<void> {
    const { g, spec } = this;
    const h = spec.hiddenSize;
    const finalNorm = await this.normWeight(FINAL_NORM, [h], '/model/norm');
    const last = this.norm(pending ?? x, pending === null ? null : x, finalNorm, '/model/norm');
    let normed = last.normed;
    const selects = ATTENTION[this.opts.attention].selectsLogits;
    if (selects) {
      // Only the positions asked for reach the lm_head: a prefill that needs each row's last logits
      // skips S - 1 of every S vocabulary products (and their logits' copy out of onnxruntime).
      g.input(io.logitsIndex, Elem.INT64, ['batch_size', 'logits_positions']);
      const rows = g.op('Reshape', [normed, g.constant(`/const/shape_-1_${h}`, Elem.INT64, [2], [-1, h])], '/model/norm/Rows'); // [B*S, h]
      normed = g.op('Gather', [rows, io.logitsIndex], '/model/norm/Select', { axis: { int: 0 } }); // [B, n, h]
    }
    let y: string;
    if (spec.tiedEmbeddings && embedded) y = embedding.tiedHead(g, spec, normed);
    // A graph without the embedding (a last pipeline stage, a tensor-parallel head) stores the tied weight itself.
    else if (spec.tiedEmbeddings) y = gemmHead(g, spec, normed, await this.floatWeight(EMBED_TOKENS, [spec.vocabSize, h]));
    else y = await this.proj(normed, '/lm_head', LM_HEAD.replace(/\.weight$/, ''), h, spec.vocabSize, false);
    if (spec.finalSoftcap !== undefined) y = this.softcap(y, spec.finalSoftcap, '/lm_head/Softcap');
    g.node('Identity', [y], { name: '/lm_head/Identity', outputs: [io.logits] });
    g.output(io.logits, Elem.FLOAT, ['batch_size', selects ? 'logits_positions' : 'sequence_length', spec.vocabSize]);
  }

  /**
   * The whole decoder: input_ids (and the KV cache) in, logits (and the present cache) out. Without
   * a cache (training graphs) every layer attends within the given sequence only.
   */
  async build(cache = true): Promise<void> {
    const { g, spec } = this;
    g.input(io.inputIds, Elem.INT64, ['batch_size', 'sequence_length']);
    const sliding = Array.from({ length: spec.numLayers }, (_, i) => layerWindow(spec, i) !== null).some(Boolean);
    this.windowed = cache && sliding && this.opts.windowedCache === true;
    const ctx = this.prologue(io.inputIds);
    if (cache) this.pastInputs(0, spec.numLayers);

    const embedding = this.opts.embedding ?? floatEmbedding;
    let x = this.scaleEmbedding(await embedding.gather(g, this.weights, spec, io.inputIds)); // [B,S,h]
    this.opts.onTensor?.(EMBED_TOKENS);
    let pending: string | null = null; // output of the previous block, not yet added to the residual
    for (let i = 0; i < spec.numLayers; i++) {
      ({ x, pending } = await this.layer(i, ctx, x, pending, cache));
      if (this.opts.hiddenStates) {
        g.node('Add', [x, pending!], { name: `/model/layers.${i}/hidden/Add`, outputs: [io.hiddenLayer(i)] });
        g.output(io.hiddenLayer(i), Elem.FLOAT, ['batch_size', 'sequence_length', spec.hiddenSize]);
      }
    }
    await this.head(x, pending, embedding, true);
  }

  /**
   * The part of the decoder one rank runs between two hand-overs (see DecoderSegment): a pipeline
   * stage over whole layers with their KV cache, or, under tensor parallelism, the embedding, one
   * attention or MLP block, or the head. The spec and weights are the rank's own slice.
   */
  async buildSegment(seg: DecoderSegment): Promise<void> {
    const { g, spec } = this;
    const h = spec.hiddenSize;
    const hiddenDims = ['batch_size', 'sequence_length', h];
    const tokens =
      seg.input === io.inputIds
        ? g.input(io.inputIds, Elem.INT64, ['batch_size', 'sequence_length'])
        : g.input(io.hiddenStates, Elem.FLOAT, hiddenDims);
    const attends = (seg.layers !== undefined && seg.layers.to > seg.layers.from) || seg.half?.block === 'attn';
    const [first, end] = seg.layers ? [seg.layers.from, seg.layers.to] : [seg.half?.layer ?? 0, (seg.half?.layer ?? 0) + 1];
    const rotates = Array.from({ length: end - first }, (_, k) => layerHasRope(spec, first + k)).some(Boolean);
    const slides = Array.from({ length: end - first }, (_, k) => layerWindow(spec, first + k) !== null).some(Boolean);
    this.windowed = attends && slides && this.opts.windowedCache === true;
    const ctx = attends ? this.prologue(tokens, rotates) : null;
    if (seg.layers) this.pastInputs(seg.layers.from, seg.layers.to);
    if (seg.half?.block === 'attn') this.pastInputs(seg.half.layer, seg.half.layer + 1);

    let x = tokens;
    if (seg.pendingNorm !== undefined) {
      // Sandwich norms: the previous block's summed output, normed by its post norm, joins the residual stream here.
      const sum = g.input(io.partialSum, Elem.FLOAT, hiddenDims);
      const path = seg.pendingNorm
        .replace(/^model\./, '/model/')
        .replace(/\.weight$/, '')
        .replaceAll('.', '/');
      const normed = this.norm(sum, null, await this.normWeight(seg.pendingNorm, [h], path), path).normed;
      x = g.op('Add', [x, normed], '/model/PendingResidualAdd');
      g.node('Identity', [x], { name: '/model/ResidualOutput', outputs: [io.hiddenStatesOut] });
      g.output(io.hiddenStatesOut, Elem.FLOAT, hiddenDims);
    }
    if (seg.input === io.inputIds) {
      x = this.scaleEmbedding(
        seg.vocabOffset === undefined
          ? await floatEmbedding.gather(g, this.weights, spec, tokens)
          : await this.vocabParallelGather(tokens, seg.vocabOffset),
      );
      this.opts.onTensor?.(EMBED_TOKENS);
    }
    if (seg.half) {
      // One block on the full residual stream; its output is this rank's share of a sum the runtime forms.
      const { layer, block } = seg.half;
      // With sandwich norms the share goes out un-normed: the next segment norms the whole sum (pendingNorm).
      const n = layerTensorNames(layer);
      const norm = block === 'attn' ? 'input_layernorm' : spec.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm';
      const normPath = `/model/layers.${layer}/${norm}`;
      const gamma = await this.normWeight(block === 'attn' ? n.inputNorm : this.mlpNormTensor(layer), [h], normPath);
      const normed = this.norm(x, null, gamma, normPath).normed;
      const raw = block === 'attn' ? await this.attention(layer, ctx!, normed, true) : await this.mlp(layer, normed);
      x = spec.sandwichNorms ? raw : block === 'attn' ? await this.attentionBlockOutput(layer, raw) : await this.mlpBlockOutput(layer, raw);
    }
    let pending: string | null = null;
    if (seg.layers) for (let i = seg.layers.from; i < seg.layers.to; i++) ({ x, pending } = await this.layer(i, ctx!, x, pending, true));
    if (seg.head) return this.head(x, pending, floatEmbedding, seg.input === io.inputIds && seg.vocabOffset === undefined);
    const out = seg.half || seg.vocabOffset !== undefined ? io.partialHiddenStates : io.hiddenStatesOut;
    if (pending) g.node('Add', [x, pending], { name: '/model/ResidualAdd', outputs: [out] });
    else g.node('Identity', [x], { name: '/model/Output', outputs: [out] });
    g.output(out, Elem.FLOAT, hiddenDims);
  }

  /**
   * Embedding rows [offset, offset + V) of a vocabulary split across ranks: ids outside the range
   * give zero rows, so the ranks' outputs sum to the full embedding.
   */
  private async vocabParallelGather(ids: string, offset: number): Promise<string> {
    const { g, spec } = this;
    const p = '/model/embed_tokens';
    const V = spec.vocabSize;
    const embed = await this.floatWeight(EMBED_TOKENS, [V, spec.hiddenSize]);
    const i64 = (name: string, v: number) => g.constant(name, Elem.INT64, [], [v]);
    const local = g.op('Sub', [ids, i64(`/const/vocab_offset_${offset}`, offset)], `${p}/Sub`);
    const zero = i64('/const/zero_i64', 0);
    const inRange = g.op(
      'And',
      [g.op('GreaterOrEqual', [local, zero], `${p}/GreaterOrEqual`), g.op('Less', [local, i64(`/const/vocab_${V}_i64`, V)], `${p}/Less`)],
      `${p}/InRange`,
    );
    const clipped = g.op('Where', [inRange, local, zero], `${p}/Clip`);
    const rows = g.op('Gather', [embed, clipped], `${p}/Gather`, { axis: { int: 0 } }); // [B,S,h]
    const keep = g.op(
      'Unsqueeze',
      [g.op('Cast', [inRange], `${p}/Cast`, { to: { int: Elem.FLOAT } }), g.constant('/const/axes_-1', Elem.INT64, [1], [-1])],
      `${p}/Keep`,
    ); // [B,S,1]
    return g.op('Mul', [rows, keep], `${p}/Mask`);
  }

  /**
   * One decoder layer as its own graph: hidden_states [B, S, h] in, the layer's output (residual
   * added) out, with the inputs of its linear layers as extra outputs. Calibration (GPTQ, Wanda,
   * SparseGPT) runs these block by block, feeding each the previous block's (compressed) output.
   */
  async buildBlock(layer: number): Promise<void> {
    const { g, spec } = this;
    g.input(io.hiddenStates, Elem.FLOAT, ['batch_size', 'sequence_length', spec.hiddenSize]);
    const ctx = this.prologue(io.hiddenStates);
    const { x, pending } = await this.layer(layer, ctx, io.hiddenStates, null, false);
    g.node('Add', [x, pending], { name: `/model/layers.${layer}/ResidualAdd`, outputs: [io.hiddenStatesOut] });
    g.output(io.hiddenStatesOut, Elem.FLOAT, ['batch_size', 'sequence_length', spec.hiddenSize]);
  }
}

/** Which inputs of linear layers a graph exposes (see core/io.ts for their names). */
export type CaptureMode = 'none' | 'raw' | 'gram' | 'both';

/**
 * What one graph of a sharded model computes. Input: token ids (the embedding comes first) or
 * hidden_states [B, S, h]. Then whole layers [from, to) with their KV cache (a pipeline stage), or
 * one block of one layer (tensor parallel: the output is partial_hidden_states, a share of a sum).
 * `head` ends with the final norm and lm_head (logits); otherwise the graph outputs
 * hidden_states_out. `vocabOffset` makes the embedding vocabulary-parallel (rows from that id on).
 */
export interface DecoderSegment {
  input: typeof io.inputIds | typeof io.hiddenStates;
  layers?: { from: number; to: number };
  half?: { layer: number; block: 'attn' | 'mlp' };
  head: boolean;
  vocabOffset?: number;
  /**
   * Sandwich norms under tensor parallelism: the graph takes partial_sum (the previous block's all-reduced output),
   * norms it by this tensor (that block's post norm), adds it to hidden_states and outputs the sum as hidden_states_out.
   */
  pendingNorm?: string;
}

/** Which captured input feeds each linear module of a layer. */
export const CAPTURE_OF = { q: 'attn_in', k: 'attn_in', v: 'attn_in', o: 'o_in', gate: 'mlp_in', up: 'mlp_in', down: 'down_in' } as const;

/**
 * The decoder without a KV cache, in ai.onnx ops (standard attention): the forward half of a training
 * graph. Weights come through `g.initializer`, which a training graph builder turns into inputs.
 */
export async function buildCachelessGraph(
  g: GraphBuilder,
  spec: DecoderSpec,
  weights: WeightSource,
  opts: { linear?: LinearEmitter; embedding?: EmbeddingEmitter; hiddenStates?: boolean } = {},
): Promise<void> {
  await new DecoderGraph(g, spec, weights, { attention: 'standard', ...opts }).build(false);
}

/** Builds one segment of a sharded decoder (see DecoderSegment) from a rank's spec and weights. */
export async function buildSegmentGraph(
  g: GraphBuilder,
  spec: DecoderSpec,
  weights: WeightSource,
  seg: DecoderSegment,
  opts: DecoderGraphOptions,
): Promise<void> {
  await new DecoderGraph(g, spec, weights, opts).buildSegment(seg);
}

/** Builds one decoder layer as a standalone graph (standard attention; see DecoderGraph.buildBlock). */
export async function buildBlockGraph(
  g: GraphBuilder,
  spec: DecoderSpec,
  weights: WeightSource,
  layer: number,
  opts: { linear?: LinearEmitter; captures?: CaptureMode } = {},
): Promise<void> {
  await new DecoderGraph(g, spec, weights, { attention: 'standard', linear: opts.linear, captures: opts.captures ?? 'gram' }).buildBlock(
    layer,
  );
}

/** Builds the decoder graph into `g`, streaming weights from `weights`. */
export async function buildDecoderGraph(
  g: GraphBuilder,
  spec: DecoderSpec,
  weights: WeightSource,
  opts: DecoderGraphOptions,
): Promise<void> {
  await new DecoderGraph(g, spec, weights, opts).build();
}
