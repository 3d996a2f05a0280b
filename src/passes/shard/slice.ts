// One rank's slice of each weight, under the Hugging Face names the graph builder reads:
// column-parallel q/k/v/gate/up keep their rows for the rank's heads or columns, row-parallel
// o/down keep the matching input columns, a split vocabulary keeps its rows of embed/lm_head.
import { layerTensorNames, EMBED_TOKENS, LM_HEAD, type DecoderSpec } from '../../core/spec.js';
import type { WeightSource } from '../../core/weights.js';
import type { RankPlan, Range } from './plan.js';

/** Rows [from, to) of a row-major [rows, cols] matrix (or elements of a vector when cols is 1). */
export function sliceRows(m: Float32Array, cols: number, r: Range): Float32Array {
  return m.slice(r.from * cols, r.to * cols);
}

/** Columns [from, to) of a row-major [rows, cols] matrix. */
export function sliceCols(m: Float32Array, rows: number, cols: number, r: Range): Float32Array {
  const w = r.to - r.from;
  const out = new Float32Array(rows * w);
  for (let i = 0; i < rows; i++) out.set(m.subarray(i * cols + r.from, i * cols + r.to), i * w);
  return out;
}

const scale = (r: Range, k: number): Range => ({ from: r.from * k, to: r.to * k });

/** How a tensor is cut across tensor-parallel ranks. */
export type SplitKind = 'rows' | 'cols' | 'rowParallelBias' | 'whole';

/** Which part of the full tensor `name` a rank keeps: rows or columns of `range`, or all of it. */
export function tensorSplit(spec: DecoderSpec, r: RankPlan, name: string): { kind: SplitKind; range: Range } {
  const d = spec.headDim;
  const all = { from: 0, to: 0 };
  if (name === EMBED_TOKENS || name === LM_HEAD)
    return r.vocab.to - r.vocab.from === spec.vocabSize ? { kind: 'whole', range: all } : { kind: 'rows', range: r.vocab };
  const m = /^model\.layers\.(\d+)\./.exec(name);
  if (!m) return { kind: 'whole', range: all };
  const n = layerTensorNames(Number(m[1]));
  const module = name.replace(/\.(weight|bias)$/, '');
  const isBias = name.endsWith('.bias');
  if (module === n.q) return { kind: 'rows', range: scale(r.heads, d) };
  if (module === n.k || module === n.v) return { kind: 'rows', range: scale(r.kvHeads, d) };
  if (module === n.gate || module === n.up) return { kind: 'rows', range: r.ffn };
  if (module === n.o) return isBias ? { kind: 'rowParallelBias', range: all } : { kind: 'cols', range: scale(r.heads, d) };
  if (module === n.down) return isBias ? { kind: 'rowParallelBias', range: all } : { kind: 'cols', range: r.ffn };
  return { kind: 'whole', range: all };
}

/**
 * The rank's weights. A row-parallel bias (o_proj, down_proj) must enter the all-reduced sum once:
 * with 'once' tp rank 0 keeps it and the others hold zeros (llmopt's graphs add it before the sum);
 * with 'every' each rank holds it whole (engines that add it after the sum, as TensorRT-LLM does).
 */
export function rankWeights(full: WeightSource, spec: DecoderSpec, r: RankPlan, rowParallelBias: 'once' | 'every' = 'once'): WeightSource {
  const read = async (name: string): Promise<Float32Array> => {
    const data = await full.readFloat32(name);
    const shape = full.shape(name);
    const cols = shape.length === 2 ? shape[1]! : 1;
    const { kind, range } = tensorSplit(spec, r, name);
    if (kind === 'rows') return sliceRows(data, cols, range);
    if (kind === 'cols') return sliceCols(data, shape[0]!, cols, range);
    if (kind === 'rowParallelBias' && rowParallelBias === 'once' && r.tpRank !== 0) return new Float32Array(data.length);
    return data;
  };
  const shape = (name: string): number[] => {
    const s = full.shape(name);
    const { kind, range } = tensorSplit(spec, r, name);
    if (kind === 'rows') return [range.to - range.from, ...s.slice(1)];
    if (kind === 'cols') return [s[0]!, range.to - range.from];
    return s;
  };
  return { has: (name) => full.has(name), shape, readFloat32: read };
}
