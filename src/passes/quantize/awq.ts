// AWQ (Lin et al., 2023, activation-aware weight quantization): per decoder layer, each group of linear layers
// that reads one input gets per-input-channel scales s = x^alpha, alpha searched on a grid for the least output
// error of the rounded group on the calibration inputs; W diag(s) is quantized and 1/s folded into the op before it
// (a norm's weight, or v_proj's / up_proj's rows), so the float model is unchanged before rounding.
import { dequantize, type BlockQuantConfig, type BlockQuantized } from '../../core/block-quant.js';
import { layerTensorNames, type DecoderSpec, type Projection } from '../../core/spec.js';
import type { WeightSource } from '../../core/weights.js';
import type { LayerwiseMethod } from '../calibration.js';
import type { LinearModule } from '../targets.js';
import { blockParams, dequantizeValue, quantizeRtn, quantizeValue, type QuantGrid } from './blockwise.js';
import { clipChooser, hessianDiagonal, type ClipMode } from './clip.js';
import { gptqQuantize, type GptqRun } from './gptq.js';

export interface AwqSettings {
  cfg: BlockQuantConfig & QuantGrid;
  /** Each module's grid when a mix gives some more bits (--mix; the same blocks): absent, `cfg` for all. */
  cfgOf?: (module: string) => BlockQuantConfig & QuantGrid;
  /** Each block's range after scaling: min/max or searched (clip.ts), weighted by the scaled inputs' energy. */
  clip: ClipMode;
  /** GPTQ on the scaled weights (awq+gptq); null: round to nearest. */
  gptq: GptqRun | null;
  /** Exponents tried: alpha = i / grid for i = 0 .. grid - 1 (default 20, as AutoAWQ's n_grid); 0 is no scaling. */
  grid?: number;
  /**
   * Rows of each weight the search measures, evenly spaced: the error costs rows x cols^2 per exponent, so by default
   * as many as 2^26 / cols^2 allows, 8 to 256 (all of a small model's).
   */
  searchRows?: number;
  /** A fixed exponent instead of the search (tests). */
  alpha?: number;
  /**
   * Rounds a scaled weight in another grid (GGUF's block types), given the Gram matrix of the scaled inputs: returns
   * the dequantized weight later layers see (the weight itself: the folded float model, as tests check it).
   * Absent: MatMulNBits' grid, `cfg`, by RTN or GPTQ, the codes in `quantized`.
   */
  rounder?: (target: LinearModule, w: Float32Array, H: Float64Array, tokens: number) => Float32Array;
}

export interface AwqResult {
  /** Codes of the scaled weights, by module. */
  quantized: Map<string, BlockQuantized>;
  /** Float tensors the folding changed (norm weights, v_proj / up_proj biases): written in place of the source's. */
  overrides: Map<string, Float32Array>;
  /** The exponent chosen for each group, keyed by its first module. */
  alphas: Map<string, number>;
  /** Groups left unscaled, one line each (a member or the op before them kept in float). */
  skipped: string[];
  /** GPTQ's summed loss over modules and its largest dampening (awq+gptq). */
  gptqError: number;
  maxDampening: number;
}

export const emptyAwqResult = (): AwqResult => ({
  quantized: new Map(),
  overrides: new Map(),
  alphas: new Map(),
  skipped: [],
  gptqError: 0,
  maxDampening: 0,
});

/** What the reports say of a run: the groups scaled, their mean exponent, and those left unscaled. */
export function awqSummary(out: AwqResult): { groups: number; meanAlpha: number; skipped: string[] } {
  const alphas = [...out.alphas.values()];
  return { groups: alphas.length, meanAlpha: alphas.reduce((a, b) => a + b, 0) / Math.max(1, alphas.length), skipped: out.skipped };
}

interface Pending {
  target: LinearModule;
  w: Float32Array;
  H: Float64Array;
  tokens: number;
}

/** A group of projections on one input and the op whose output it is (a norm weight, or v / up rows). */
interface ScaleGroup {
  members: Projection[];
  prev: { norm: string } | { linear: 'v' | 'up' };
}

/**
 * The groups of a layer, consumers before producers: o (scaled through v's rows) before q/k/v, so q/k/v's search sees
 * v as it will be rounded; down (through up's rows) before gate/up likewise.
 */
function scaleGroups(spec: DecoderSpec, layer: number): ScaleGroup[] {
  const n = layerTensorNames(layer);
  return [
    { members: ['o'], prev: { linear: 'v' } },
    { members: ['q', 'k', 'v'], prev: { norm: n.inputNorm } },
    { members: ['down'], prev: { linear: 'up' } },
    { members: ['gate', 'up'], prev: { norm: spec.sandwichNorms ? n.preFeedforwardNorm : n.postAttentionNorm } },
  ];
}

/**
 * The v_proj row feeding each o_proj input column: column h * d + i reads kv head floor(h / (heads / kvHeads)), row
 * i of it. With grouped-query attention the heads of one group share that row, so their columns share one scale.
 */
function oToVRow(spec: DecoderSpec): Int32Array {
  const d = spec.headDim;
  const perKv = spec.numHeads / spec.kvHeads;
  const map = new Int32Array(spec.numHeads * d);
  for (let c = 0; c < map.length; c++) map[c] = Math.floor(Math.floor(c / d) / perKv) * d + (c % d);
  return map;
}

/** sum over the sampled rows of d^T H d, d = Q(w diag s) / s - w: the group's output error on the calibration inputs. */
function scaledError(p: Pending, s: Float64Array, cfg: BlockQuantConfig & QuantGrid, searchRows: number | undefined): number {
  const { rows, cols } = p.target;
  const { H, w } = p;
  const sampled = searchRows ?? Math.max(8, Math.min(256, Math.floor(2 ** 26 / (cols * cols))));
  const step = Math.max(1, Math.ceil(rows / sampled));
  const x = new Float64Array(cols);
  const d = new Float64Array(cols);
  let total = 0;
  for (let r = 0; r < rows; r += step) {
    const base = r * cols;
    for (let j = 0; j < cols; j++) x[j] = w[base + j]! * s[j]!;
    for (let b = 0; b < cols; b += cfg.blockSize) {
      const end = Math.min(cols, b + cfg.blockSize);
      const q = blockParams(x, b, end, cfg);
      q.scale = Math.fround(q.scale);
      for (let j = b; j < end; j++) d[j] = dequantizeValue(quantizeValue(x[j]!, q, cfg.bits, cfg.fullRange), q) / s[j]! - w[base + j]!;
    }
    for (let i = 0; i < cols; i++) {
      if (d[i] === 0) continue;
      let acc = 0;
      const hi = i * cols;
      for (let j = 0; j < cols; j++) acc += H[hi + j]! * d[j]!;
      total += d[i]! * acc;
    }
  }
  return total;
}

/**
 * Mean over the members' rows of |w| / the absmax of its block, per input column: llm-compressor's w_mean for its
 * "duo" scales x^alpha / w^(1 - alpha), which also lower the columns with large weights.
 */
function weightMeans(members: Pending[], blockSize: number): Float64Array {
  const cols = members[0]!.target.cols;
  const m = new Float64Array(cols);
  let n = 0;
  for (const p of members) {
    for (let r = 0; r < p.target.rows; r++) {
      const base = r * cols;
      for (let b = 0; b < cols; b += blockSize) {
        const end = Math.min(cols, b + blockSize);
        let a = 0;
        for (let j = b; j < end; j++) a = Math.max(a, Math.abs(p.w[base + j]!));
        if (a > 0) for (let j = b; j < end; j++) m[j] += Math.abs(p.w[base + j]!) / a;
      }
    }
    n += p.target.rows;
  }
  for (let j = 0; j < cols; j++) m[j] /= n;
  return m;
}

/**
 * s = max(x^alpha / w^(1 - alpha), 1e-4) (w null: x^alpha alone), averaged within each `pool` group of columns (o's
 * columns of one v row), then normalised by sqrt(max s * min s) as AutoAWQ does, so the scales centre on 1.
 */
function scalesFor(x: Float64Array, alpha: number, w: Float64Array | null, pool: Int32Array | null): Float64Array {
  let s = new Float64Array(x.length);
  for (let j = 0; j < x.length; j++) s[j] = Math.max(x[j]! ** alpha / (w ? Math.max(w[j]!, 1e-8) ** (1 - alpha) : 1), 1e-4);
  if (pool) {
    const sum = new Float64Array(x.length);
    const count = new Float64Array(x.length);
    for (let j = 0; j < x.length; j++) {
      sum[pool[j]!] += s[j]!;
      count[pool[j]!]++;
    }
    s = s.map((_, j) => sum[pool[j]!]! / count[pool[j]!]!);
  }
  let lo = Infinity;
  let hi = 0;
  for (const v of s) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const norm = Math.sqrt(lo * hi);
  for (let j = 0; j < s.length; j++) s[j] = s[j]! / norm;
  return s;
}

/**
 * AWQ as a layer-wise method: compress() collects each target's weight and Gram matrix; layerDone() searches and
 * folds the layer's scales, rounds the scaled weights (RTN or GPTQ on the Gram matrix of the scaled inputs) and hands
 * the calibration loop the rounded weights and folded tensors, so later layers calibrate on what the artifact computes.
 */
export function awqMethod(spec: DecoderSpec, weights: WeightSource, settings: AwqSettings, out: AwqResult): LayerwiseMethod {
  const { cfg } = settings;
  const cfgOf = settings.cfgOf ?? (() => cfg);
  const grid = settings.grid ?? 20;
  const { searchRows } = settings;
  const offset = spec.normOffset ?? 0;
  const vRowOf = oToVRow(spec);
  let pending = new Map<Projection, Pending>();

  // Both of llm-compressor's families, x^alpha and x^alpha / w^(1 - alpha): the one measured better is kept.
  const search = (members: Pending[], x: Float64Array, pool: Int32Array | null): { alpha: number; s: Float64Array } => {
    const alphas = settings.alpha !== undefined ? [settings.alpha] : Array.from({ length: grid }, (_, i) => i / grid);
    const w = weightMeans(members, cfg.blockSize);
    let best: { alpha: number; s: Float64Array; error: number } = { alpha: 0, s: new Float64Array(x.length).fill(1), error: Infinity };
    for (const family of settings.alpha !== undefined ? [null] : [null, w]) {
      for (const alpha of alphas) {
        const s = scalesFor(x, alpha, family, pool);
        const error = members.reduce((a, p) => a + scaledError(p, s, cfgOf(p.target.module), searchRows), 0);
        if (error < best.error) best = { alpha, s, error };
      }
    }
    return best;
  };

  const fold = async (layer: number, group: ScaleGroup): Promise<Map<string, Float32Array>> => {
    const folded = new Map<string, Float32Array>();
    const members = group.members.map((k) => pending.get(k));
    const prevLinear = 'linear' in group.prev ? pending.get(group.prev.linear) : undefined;
    const name = layerTensorNames(layer)[group.members[0]!];
    if (members.some((m) => !m) || ('linear' in group.prev && !prevLinear)) {
      out.skipped.push(`${name}: ${group.members.join('/')} unscaled (a member or the projection before them stays float)`);
      return folded;
    }
    const first = members[0]!;
    const cols = first.target.cols;
    const H = first.H;
    const x = new Float64Array(cols);
    for (let j = 0; j < cols; j++) x[j] = Math.sqrt(Math.max(0, H[j * cols + j]!) / first.tokens);
    // o's columns of one kv group share v's row, so one scale: the candidates are pooled by v row.
    const isO = group.members[0] === 'o';
    const { alpha, s } = search(members as Pending[], x, isO ? vRowOf : null);
    out.alphas.set(name, alpha);
    const perRow = new Float64Array(isO ? spec.kvHeads * spec.headDim : 0);
    if (isO) for (let c = 0; c < cols; c++) perRow[vRowOf[c]!] = s[c]!;
    const rowScale = (r: number) => (isO ? perRow[r]! : s[r]!);
    // The members' weights take diag(s) on their columns; their inputs become x / s, so H becomes D^-1 H D^-1.
    const scaledH = new Float64Array(H.length);
    for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) scaledH[i * cols + j] = H[i * cols + j]! / (s[i]! * s[j]!);
    for (const m of members as Pending[]) {
      for (let r = 0; r < m.target.rows; r++) for (let j = 0; j < cols; j++) m.w[r * cols + j]! *= s[j]!;
      m.H = scaledH;
    }
    if ('norm' in group.prev) {
      // RMSNorm scales by (offset + w): (offset + w') = (offset + w) / s, so w' = (offset + w) / s - offset.
      const w = await weights.readFloat32(group.prev.norm);
      for (let j = 0; j < cols; j++) w[j] = Math.fround((offset + w[j]!) / s[j]! - offset);
      folded.set(group.prev.norm, w);
    } else {
      const p = prevLinear!;
      const pc = p.target.cols;
      for (let r = 0; r < p.target.rows; r++) {
        const inv = 1 / rowScale(r);
        for (let j = 0; j < pc; j++) p.w[r * pc + j]! *= inv;
      }
      if (spec.biases[group.prev.linear]) {
        const biasName = `${p.target.module}.bias`;
        const b = await weights.readFloat32(biasName);
        for (let r = 0; r < b.length; r++) b[r] = b[r]! / rowScale(r);
        folded.set(biasName, b);
      }
    }
    return folded;
  };

  const round = (p: Pending): Float32Array => {
    const { rows, cols, module } = p.target;
    if (settings.rounder) return settings.rounder(p.target, p.w, p.H, p.tokens);
    const cfg = cfgOf(module);
    const choose = clipChooser(settings.clip, cfg, hessianDiagonal(p.H, cols));
    let q: BlockQuantized;
    if (settings.gptq) {
      const r = gptqQuantize(p.w, rows, cols, p.H, p.tokens, { ...cfg, ...settings.gptq }, choose);
      q = r.quantized;
      out.gptqError += r.error;
      out.maxDampening = Math.max(out.maxDampening, r.dampeningUsed);
    } else {
      q = quantizeRtn(p.w, rows, cols, cfg, choose);
    }
    out.quantized.set(module, q);
    return dequantize(q);
  };

  return {
    statistic: 'hessian',
    compress: (t, w, inputs) => {
      pending.set(t.kind, { target: t, w, H: inputs.hessian!, tokens: inputs.tokens });
      return w; // replaced in layerDone, once the layer's scales are folded
    },
    layerDone: async (layer, _targets, compressed) => {
      for (const group of scaleGroups(spec, layer)) {
        for (const [name, t] of await fold(layer, group)) {
          out.overrides.set(name, t);
          compressed.set(name, t);
        }
      }
      for (const p of pending.values()) compressed.set(`${p.target.module}.weight`, round(p));
      pending = new Map();
    },
  };
}
