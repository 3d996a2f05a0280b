// The tensors of a spec as GGUF stores them, from the architecture table (architectures.ts): each GGUF tensor's
// Hugging Face sources and shape in the converter's order, and the layout change both ways (q/k rows permuted to
// llama.cpp's interleaved rotary pairs, Gemma's 1 + w, Phi-3's stacked rows), plus Llama 3's rope factor tensor.
import { projectionShape, type DecoderSpec, type Projection } from '../../core/spec.js';
import type { GgufArchitecture, GgufTensorRule, GgufTransform } from './architectures.js';

/** One stored GGUF tensor of a spec: its name, its Hugging Face source tensors, its shape (outermost first). */
export interface GgufTensorEntry {
  gguf: string;
  hf: string[];
  shape: number[];
  transform?: GgufTransform;
}

/** Rows each Hugging Face tensor contributes to a stacked GGUF tensor (Phi-3's fused ones). */
export function partRows(spec: DecoderSpec, hfName: string, shape: number[]): number {
  const m = /\.(q|k|v|o|gate|up|down)_proj\.(weight|bias)$/.exec(hfName);
  return m ? projectionShape(spec, m[1] as Projection)[0] : shape[0]!;
}

/**
 * Every GGUF tensor of a spec from its tensors' Hugging Face names and shapes (`hfShapes`: the per-projection view, fused
 * parts split), in llama.cpp's converter's order (sorted by stored Hugging Face name), rope factor tensors first.
 */
export function ggufTensorPlan(spec: DecoderSpec, arch: GgufArchitecture, hfShapes: ReadonlyMap<string, number[]>): GgufTensorEntry[] {
  const entries: Array<GgufTensorEntry & { order: string }> = [];
  const add = (rule: GgufTensorRule, ggufPrefix: string, hfPrefix: string) => {
    for (const suffix of ['weight', 'bias']) {
      const hf = rule.hf.map((m) => `${hfPrefix}${m}.${suffix}`);
      if (!hf.every((n) => hfShapes.has(n))) continue;
      const shapes = hf.map((n) => hfShapes.get(n)!);
      const rows = shapes.reduce((a, s) => a + s[0]!, 0);
      const shape = [rows, ...shapes[0]!.slice(1)];
      // The converter meets a fused tensor under its stored name (qkv_proj sorts where q_proj would not).
      const stored = hf.length > 1 ? `${hfPrefix}${rule.hf[0]!.replace(/\.[a-z]+_proj$/, `.${fusedName(rule)}`)}.${suffix}` : hf[0]!;
      entries.push({ gguf: `${ggufPrefix}${rule.gguf}.${suffix}`, hf, shape, transform: rule.transform, order: stored });
    }
  };
  for (const rule of arch.globals) if (rule.gguf !== 'output' || !spec.tiedEmbeddings) add(rule, '', '');
  for (let i = 0; i < spec.numLayers; i++) for (const rule of arch.layer) add(rule, `blk.${i}.`, `model.layers.${i}.`);
  entries.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
  return entries.map(({ order: _, ...e }) => e);
}

/** The Hugging Face module Phi-3 stores a fused rule's parts in. */
const fusedName = (rule: GgufTensorRule) => (rule.gguf === 'attn_qkv' ? 'qkv_proj' : 'gate_up_proj');

/** Heads a permuted tensor's rows are grouped in. */
const permuteHeads = (spec: DecoderSpec, t: { heads: 'q' | 'k' }) => (t.heads === 'q' ? spec.numHeads : spec.kvHeads);

/** Row order change of llama.cpp's q/k permutation: GGUF row r of a head holds Hugging Face row `from[r]`. */
function permutation(rows: number, heads: number, inverse: boolean): Int32Array {
  const d = rows / heads;
  const half = d / 2;
  const from = new Int32Array(rows);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const gg = h * d + 2 * i + j;
        const hf = h * d + j * half + i;
        if (inverse) from[hf] = gg;
        else from[gg] = hf;
      }
    }
  }
  return from;
}

function applyTransform(spec: DecoderSpec, t: GgufTransform | undefined, data: Float32Array, shape: number[], inverse: boolean) {
  if (!t) return data;
  if (t.kind === 'add') {
    const out = new Float32Array(data.length);
    const v = inverse ? -t.value : t.value;
    for (let i = 0; i < data.length; i++) out[i] = data[i]! + v;
    return out;
  }
  const rows = shape[0]!;
  const cols = data.length / rows;
  const from = permutation(rows, permuteHeads(spec, t), inverse);
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) out.set(data.subarray(from[r]! * cols, (from[r]! + 1) * cols), r * cols);
  return out;
}

/**
 * For a tensor whose transform reorders rows (llama.cpp's q/k permutation): the row of its stacked Hugging Face
 * parts each GGUF row holds; null when rows keep their order. Quantized rows (whole blocks each) move by it as they are.
 */
export function ggufRowOrder(spec: DecoderSpec, entry: GgufTensorEntry): Int32Array | null {
  const t = entry.transform;
  return t?.kind === 'rope-permute' ? permutation(entry.shape[0]!, permuteHeads(spec, t), false) : null;
}

/** A GGUF tensor's float values from its Hugging Face parts (stacked by rows, then transformed). */
export function toGgufLayout(spec: DecoderSpec, entry: GgufTensorEntry, parts: readonly Float32Array[]): Float32Array {
  let data: Float32Array;
  if (parts.length === 1) data = parts[0]!;
  else {
    data = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) {
      data.set(p, at);
      at += p.length;
    }
  }
  return applyTransform(spec, entry.transform, data, entry.shape, false);
}

/** The inverse: a GGUF tensor's float values back to its Hugging Face parts (the reader's direction). */
export function fromGgufLayout(spec: DecoderSpec, entry: GgufTensorEntry, data: Float32Array): Float32Array[] {
  const hf = applyTransform(spec, entry.transform, data, entry.shape, true);
  if (entry.hf.length === 1) return [hf];
  const cols = data.length / entry.shape[0]!;
  const out: Float32Array[] = [];
  let row = 0;
  for (const name of entry.hf) {
    const rows = partRows(spec, name, entry.shape);
    out.push(hf.slice(row * cols, (row + rows) * cols));
    row += rows;
  }
  return out;
}

/**
 * Llama 3.x rope scaling as llama.cpp holds it: one divisor per rotary frequency (the `rope_freqs` tensor), computed
 * as llama.cpp's converter does from rope_theta, head_dim and the llama3 rope_scaling keys. Null for other scalings.
 */
export function llama3RopeFactors(spec: DecoderSpec): Float32Array | null {
  const s = spec.ropeScaling;
  if (s?.type !== 'llama3') return null;
  const dim = spec.headDim;
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  // float32 at every step, as the converter's torch arithmetic (a Python number divided by a tensor is reciprocal x number).
  const f = Math.fround;
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const freq = f(1 / f(spec.ropeTheta ** f((2 * i) / dim)));
    const wavelen = f(f(1 / freq) * f(2 * Math.PI));
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth = f(f(f(f(1 / wavelen) * s.originalMaxPositions) - s.lowFreqFactor) / f(s.highFreqFactor - s.lowFreqFactor));
      out[i] = f(1 / f(f(f(1 - smooth) / s.factor) + smooth));
    }
  }
  return out;
}
