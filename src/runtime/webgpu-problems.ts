// One-node ONNX problems with fixed inputs that tell whether an adapter runs a kernel right: the
// GroupQueryAttention self-check (and upstream reproduction) and the shader-f16 probe.
import { Elem, GraphBuilder, encodeModel, MS_DOMAIN } from '../formats/onnx/graph.js';
import { TOOL_VERSION } from '../formats/artifact.js';
import { Tensor } from './session.js';

/** A model with fixed feeds: run it on the CPU and on the device and compare the first output. */
export interface KernelProblem {
  name: string;
  model: Uint8Array;
  feeds: () => Record<string, Tensor>;
  /** The output compared. */
  output: string;
}

/** Deterministic values in [-1, 1) (a linear congruential sequence), so every run feeds the same numbers. */
function fixedValues(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x / 2 ** 31 - 1;
  }
  return out;
}

/** The shape of a GroupQueryAttention problem: one prefill of `seq` tokens into an empty cache. */
export interface GqaShape {
  batch: number;
  seq: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/**
 * One com.microsoft GroupQueryAttention node as llmopt's fused graphs use it (no rotary inside, empty
 * past, seqlens_k = seq - 1): the problem where onnxruntime 1.30's WebGPU kernel goes wrong from the
 * fifth query on for 32 tokens or more on an adapter with subgroups of 4 (microsoft/onnxruntime#26064).
 */
export function gqaProblem(shape: GqaShape): KernelProblem {
  const { batch: B, seq: S, heads: H, kvHeads: KV, headDim: D } = shape;
  const g = new GraphBuilder(null);
  const q = g.input('query', Elem.FLOAT, [B, S, H * D]);
  const k = g.input('key', Elem.FLOAT, [B, S, KV * D]);
  const v = g.input('value', Elem.FLOAT, [B, S, KV * D]);
  const pk = g.input('past_key', Elem.FLOAT, [B, KV, 0, D]);
  const pv = g.input('past_value', Elem.FLOAT, [B, KV, 0, D]);
  const seqlens = g.input('seqlens_k', Elem.INT32, [B]);
  const total = g.input('total_sequence_length', Elem.INT32, []);
  g.node('GroupQueryAttention', [q, k, v, pk, pv, seqlens, total], {
    name: 'GroupQueryAttention',
    outputs: ['output', 'present_key', 'present_value'],
    domain: MS_DOMAIN,
    attrs: {
      num_heads: { int: H },
      kv_num_heads: { int: KV },
      scale: { float: 1 / Math.sqrt(D) },
      do_rotary: { int: 0 },
      local_window_size: { int: -1 },
    },
  });
  g.output('output', Elem.FLOAT, [B, S, H * D]);
  g.output('present_key', Elem.FLOAT, [B, KV, S, D]);
  g.output('present_value', Elem.FLOAT, [B, KV, S, D]);
  const model = encodeModel(g, 'gqa_check', { opset: 17, producerVersion: TOOL_VERSION });
  const feeds = () => ({
    query: new Tensor('float32', fixedValues(B * S * H * D, 1), [B, S, H * D]),
    key: new Tensor('float32', fixedValues(B * S * KV * D, 2), [B, S, KV * D]),
    value: new Tensor('float32', fixedValues(B * S * KV * D, 3), [B, S, KV * D]),
    past_key: new Tensor('float32', new Float32Array(0), [B, KV, 0, D]),
    past_value: new Tensor('float32', new Float32Array(0), [B, KV, 0, D]),
    seqlens_k: new Tensor('int32', new Int32Array(B).fill(S - 1), [B]),
    total_sequence_length: new Tensor('int32', Int32Array.of(S), []),
  });
  return { name: `GroupQueryAttention (batch ${B}, ${S} tokens, ${H}/${KV} heads, head_dim ${D})`, model, feeds, output: 'output' };
}

/**
 * The self-check's shapes: aidreams-260k's heads at a prompt length where the known failure shows, and
 * grouped heads of a larger head_dim at batch 2 (a kernel may take another path there).
 */
export const GQA_CHECK_SHAPES: readonly GqaShape[] = [
  { batch: 1, seq: 40, heads: 4, kvHeads: 4, headDim: 16 },
  { batch: 2, seq: 40, heads: 4, kvHeads: 2, headDim: 64 },
];

/** One Gather from a float16 table, then a Cast to float32: what an fp16 artifact's embedding lookup runs. */
export function f16Problem(): KernelProblem {
  const g = new GraphBuilder(null);
  const table = new Uint16Array(64).map((_, i) => 0x3c00 + i); // 1.0 and the next 63 halves
  g.initializer('table', Elem.FLOAT16, [16, 4], new Uint8Array(table.buffer));
  const ids = g.input('ids', Elem.INT64, [3]);
  const rows = g.op('Gather', ['table', ids], 'Gather', { axis: { int: 0 } });
  g.node('Cast', [rows], { name: 'Cast', outputs: ['rows'], attrs: { to: { int: Elem.FLOAT } } });
  g.output('rows', Elem.FLOAT, [3, 4]);
  const model = encodeModel(g, 'f16_check', { opset: 17, producerVersion: TOOL_VERSION });
  return {
    name: 'Gather on a float16 table',
    model,
    feeds: () => ({ ids: new Tensor('int64', BigInt64Array.of(3n, 0n, 15n), [3]) }),
    output: 'rows',
  };
}

/** Largest absolute difference of two equally long arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = a.length === b.length ? 0 : Number.POSITIVE_INFINITY;
  for (let i = 0; i < Math.min(a.length, b.length); i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}
