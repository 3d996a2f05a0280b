// `llmopt synth --grow-from`: a trained small Llama turned into a larger checkpoint that computes the same function
// (computational invariance, as in SliceGPT and QuaRot), so speculative decoding can be measured on a trained target.
//
// The residual stream x (h dims) becomes x' = c M x, M an H x h matrix of orthonormal columns (the first h columns of a
// random orthogonal Q: a zero-padded x mixed by Q) and c = sqrt(H / h), the factor that keeps the RMS of x' over H dims
// equal to the RMS of x over h dims, so every RMSNorm sees the same value and epsilon. Norm weights are folded into
// the projections that read them (the grown norms are ones); readers of the stream get W diag(g) M^T / c, writers
// c M W. Heads keep their dims at the rotary frequencies they had: with head_dim D = r d, source dim j (< d/2) goes to
// j r and j + d/2 to j r + D/2 (rotate-half pairs of equal frequency), the other dims of q and k are zero, and q is
// scaled by sqrt(r) so q.k / sqrt(D) stays q.k / sqrt(d). New heads, MLP neurons and layers have random inputs and
// zero output projections (o_proj columns, down_proj columns, whole o_proj and down_proj of new layers), plus --noise
// (std noise / sqrt(fan-in): each new output adds about `noise` times its unit-RMS input to the stream).
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { EMBED_TOKENS, FINAL_NORM, LM_HEAD, layerTensorNames, type DecoderSpec, type WeightDtype } from '../core/spec.js';
import type { WeightSource } from '../core/weights.js';
import { checkpointTensors } from '../core/fused.js';
import { fromFloat32 } from '../formats/dtype.js';
import { passRecord } from '../formats/manifest.js';
import { writeModelFolder } from '../formats/model-folder.js';
import { writeSafetensors, type TensorEntry } from '../formats/safetensors.js';
import { promises as fs } from 'node:fs';
import { configJsonOf } from './architectures/index.js';
import { openHfModel } from './checkpoint.js';
import { fnv1a, normalSamples } from './synthetic.js';

/** The shape to grow to (synth's flags); headDim defaults to hidden / heads. */
export interface GrowShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim?: number;
  ffn: number;
  /**
   * Noise on the output projections' new (zero) parts: Gaussian of std noise / sqrt(fan-in), so that each adds about
   * `noise` times its (unit-RMS) input's scale to the residual stream; 0: exactly the source's function.
   */
  noise: number;
  dtype: WeightDtype;
}

/** Refuses what the growth does not cover: anything past the Llama baseline (biases, q/k norms, Gemma's norms...). */
function checkLlamaShaped(spec: DecoderSpec, dir: string): void {
  const extras: Array<[boolean, string]> = [
    [spec.architecture !== 'llama', `architecture ${spec.architecture}`],
    [Object.values(spec.biases).some(Boolean), 'biases'],
    [spec.qkNorm, 'q/k norms'],
    [spec.ropeLayers !== null, 'layers without rotary'],
    [spec.rotaryDim !== undefined && spec.rotaryDim !== spec.headDim, 'partial rotary'],
    [(spec.fusedTensors?.length ?? 0) > 0, 'fused tensors'],
    [spec.normOffset !== undefined || spec.sandwichNorms === true, "Gemma's norms"],
    [(spec.activation ?? 'silu') !== 'silu', `activation ${spec.activation}`],
    [spec.embeddingScale !== undefined || spec.attentionScale !== undefined, 'embedding or attention scales'],
    [spec.attnSoftcap !== undefined || spec.finalSoftcap !== undefined, 'soft-capping'],
    [spec.slidingWindow !== undefined, 'sliding-window attention'],
  ];
  const found = extras.filter(([has]) => has).map(([, what]) => what);
  if (found.length > 0)
    throw new InputError(
      `${dir}: --grow-from needs a Llama-shaped model (pre-norm, rotary, SwiGLU, no biases); it has ${found.join(', ')}`,
    );
}

/** Where each source head lands: its target query head, and per source kv head its copies among the target's. */
export interface HeadMap {
  /** Target query head of each source query head. */
  query: number[];
  /** Source kv head of each target kv head (null: a new head). */
  kvSource: Array<number | null>;
}

/**
 * Places source heads in the target's groups: source kv head j gets ceil(g / G) consecutive target kv heads
 * (g, G the query heads per kv head of source and target), its g query heads fill their groups in order.
 */
export function mapHeads(src: { heads: number; kvHeads: number }, dst: { heads: number; kvHeads: number }): HeadMap | null {
  const g = src.heads / src.kvHeads;
  const G = dst.heads / dst.kvHeads;
  const copies = Math.ceil(g / G);
  if (src.kvHeads * copies > dst.kvHeads) return null;
  const query: number[] = [];
  const kvSource: Array<number | null> = Array.from({ length: dst.kvHeads }, () => null);
  for (let j = 0; j < src.kvHeads; j++) {
    for (let c = 0; c < copies; c++) kvSource[j * copies + c] = j;
    for (let m = 0; m < g; m++) query.push((j * copies + Math.floor(m / G)) * G + (m % G));
  }
  return { query, kvSource };
}

/** The grown spec after checking the shape against the source (InputError naming the flag on any mismatch). */
export function grownSpec(src: DecoderSpec, o: GrowShape): DecoderSpec {
  const headDim = o.headDim ?? o.hidden / o.heads;
  if (o.heads % o.kvHeads !== 0) throw new InputError(`--heads ${o.heads} is not a multiple of --kv-heads ${o.kvHeads}`);
  if (!Number.isInteger(headDim)) throw new InputError(`--hidden ${o.hidden} is not a multiple of --heads ${o.heads}; give --head-dim`);
  const smaller: Array<[string, number, number]> = [
    ['--hidden', o.hidden, src.hiddenSize],
    ['--layers', o.layers, src.numLayers],
    ['--heads', o.heads, src.numHeads],
    ['--kv-heads', o.kvHeads, src.kvHeads],
    ['--head-dim', headDim, src.headDim],
    ['--ffn', o.ffn, src.intermediateSize],
  ];
  for (const [flag, want, have] of smaller)
    if (want < have) throw new InputError(`${flag} ${want} is smaller than the source's ${have}: --grow-from only grows a model`);
  if (headDim % src.headDim !== 0)
    throw new InputError(`head_dim ${headDim} is not a multiple of the source's ${src.headDim}: its rotary frequencies could not be kept`);
  if (!mapHeads({ heads: src.numHeads, kvHeads: src.kvHeads }, o))
    throw new InputError(
      `--kv-heads ${o.kvHeads} cannot hold the source's ${src.kvHeads} kv heads of ${src.numHeads / src.kvHeads} query heads each ` +
        `in groups of ${o.heads / o.kvHeads}`,
    );
  return {
    ...src,
    hiddenSize: o.hidden,
    numLayers: o.layers,
    numHeads: o.heads,
    kvHeads: o.kvHeads,
    headDim,
    intermediateSize: o.ffn,
    // The lm_head folds the final norm and the embedding does not: a tied source grows untied.
    tiedEmbeddings: false,
    weightDtype: o.dtype,
    rotaryDim: undefined,
  };
}

/** H x h with orthonormal columns (Gram-Schmidt, twice, on seeded Gaussian columns), row-major in float64. */
export function orthonormalColumns(H: number, h: number, seed: number): Float64Array {
  const g = normalSamples(seed, H * h);
  const cols = Array.from({ length: h }, (_, j) => Float64Array.from({ length: H }, (_, p) => g[p * h + j]!));
  for (let j = 0; j < h; j++) {
    const v = cols[j]!;
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        const u = cols[i]!;
        let dot = 0;
        for (let p = 0; p < H; p++) dot += u[p]! * v[p]!;
        for (let p = 0; p < H; p++) v[p]! -= dot * u[p]!;
      }
    }
    let norm = 0;
    for (let p = 0; p < H; p++) norm += v[p]! * v[p]!;
    norm = Math.sqrt(norm);
    for (let p = 0; p < H; p++) v[p]! /= norm;
  }
  const m = new Float64Array(H * h);
  for (let j = 0; j < h; j++) for (let p = 0; p < H; p++) m[p * h + j] = cols[j]![p]!;
  return m;
}

/** The source tensors read by name and the mixing they go through; see the file header for the algebra. */
class Grower {
  readonly c: number;
  readonly r: number;
  readonly heads: HeadMap;
  /** Source layer of each target layer (null: new); the source's are spread evenly. */
  readonly layerSource: Array<number | null>;

  constructor(
    readonly src: DecoderSpec,
    readonly dst: DecoderSpec,
    readonly weights: WeightSource,
    readonly M: Float64Array,
    readonly noise: number,
  ) {
    this.c = Math.sqrt(dst.hiddenSize / src.hiddenSize);
    this.r = dst.headDim / src.headDim;
    this.heads = mapHeads({ heads: src.numHeads, kvHeads: src.kvHeads }, { heads: dst.numHeads, kvHeads: dst.kvHeads })!;
    this.layerSource = Array.from({ length: dst.numLayers }, () => null);
    for (let l = 0; l < src.numLayers; l++) this.layerSource[Math.floor((l * dst.numLayers) / src.numLayers)] = l;
  }

  /** rows x H: row i is scale * M (g .* W[i]) (W[i] a source row, null: zeros). */
  mixIn(rows: Array<Float32Array | null>, g: Float32Array | null, scale: number): Float32Array {
    const { hiddenSize: h } = this.src;
    const H = this.dst.hiddenSize;
    const out = new Float32Array(rows.length * H);
    const w = new Float64Array(h);
    rows.forEach((row, i) => {
      if (!row) return;
      for (let j = 0; j < h; j++) w[j] = row[j]! * (g ? g[j]! : 1) * scale;
      for (let p = 0; p < H; p++) {
        let s = 0;
        for (let j = 0; j < h; j++) s += this.M[p * h + j]! * w[j]!;
        out[i * H + p] = s;
      }
    });
    return out;
  }

  /** H x cols: c M W for a source [h, n] matrix whose column k lands at target column cols[k]. */
  mixOut(W: Float32Array, n: number, colOf: (k: number) => number, cols: number): Float32Array {
    const h = this.src.hiddenSize;
    const H = this.dst.hiddenSize;
    const out = new Float32Array(H * cols);
    for (let k = 0; k < n; k++) {
      const t = colOf(k);
      for (let p = 0; p < H; p++) {
        let s = 0;
        for (let j = 0; j < h; j++) s += this.M[p * h + j]! * W[j * n + k]!;
        out[p * cols + t] = this.c * s;
      }
    }
    return out;
  }

  /** Seeded Gaussian values for `name` (std `std`), added where `where(index)` holds. */
  addNoise(name: string, values: Float32Array, std: number, where: (i: number) => boolean = () => true): Float32Array {
    if (std === 0) return values;
    const n = normalSamples(fnv1a(`grow/${name}`), values.length);
    for (let i = 0; i < values.length; i++) if (where(i)) values[i]! += std * n[i]!;
    return values;
  }

  async rows(name: string, count: number, width: number): Promise<Float32Array[]> {
    const w = await this.weights.readFloat32(name);
    return Array.from({ length: count }, (_, i) => w.subarray(i * width, (i + 1) * width));
  }

  /** The target tensor `name` as float32. */
  async tensor(name: string, shape: number[]): Promise<Float32Array> {
    const size = shape.reduce((a, b) => a * b, 1);
    if (name.endsWith('norm.weight')) return new Float32Array(size).fill(1);
    const { src, dst } = this;
    const h = src.hiddenSize;
    if (name === EMBED_TOKENS) return this.mixIn(await this.rows(EMBED_TOKENS, src.vocabSize, h), null, this.c);
    if (name === LM_HEAD) {
      const head = src.tiedEmbeddings ? EMBED_TOKENS : LM_HEAD;
      return this.mixIn(await this.rows(head, src.vocabSize, h), await this.weights.readFloat32(FINAL_NORM), 1 / this.c);
    }
    const layer = Number(/^model\.layers\.(\d+)\./.exec(name)?.[1]);
    const from = this.layerSource[layer] ?? null;
    const proj = /\.(\w+)_proj\.weight$/.exec(name)?.[1];
    // Inputs of new parts: random, at the scale that gives unit-variance outputs from a normalised stream.
    const rootFanIn = Math.sqrt(shape[1]!);
    const random = () => this.addNoise(`${name}/init`, new Float32Array(size), 1 / rootFanIn);
    if (from === null)
      return proj === 'o' || proj === 'down' ? this.addNoise(name, new Float32Array(size), this.noise / rootFanIn) : random();
    const t = layerTensorNames(from);
    const d = src.headDim;
    const D = dst.headDim;
    if (proj === 'q' || proj === 'k' || proj === 'v') {
      const g = await this.weights.readFloat32(t.inputNorm);
      const heads = proj === 'q' ? src.numHeads : src.kvHeads;
      const source = await this.rows(`${t[proj]}.weight`, heads * d, h);
      // Target head of each source head, and which target rows are the source's (the rest: new heads or zero dims).
      const targets = proj === 'q' ? this.heads.query.map((q) => [q]) : this.kvTargets();
      const rows: Array<Float32Array | null> = Array.from({ length: shape[0]! }, () => null);
      for (let i = 0; i < heads; i++)
        for (const to of targets[i]!)
          for (let j = 0; j < d; j++) rows[to * D + (proj === 'v' ? j : this.rotaryDim(j))] = source[i * d + j]!;
      const scale = (proj === 'q' ? Math.sqrt(this.r) : 1) / this.c;
      const out = this.mixIn(rows, g, scale);
      const used = new Set(targets.flat());
      // Rows of a used q/k head outside the source's dims must stay zero (they would change the scores): noise only.
      // A new head's rows and a used v head's extra dims are read only through zero o_proj columns: random.
      const init = normalSamples(fnv1a(`grow/${name}/init`), size);
      const fresh = (row: number) => !used.has(Math.floor(row / D)) || proj === 'v';
      for (let row = 0; row < shape[0]!; row++) {
        if (rows[row]) continue;
        const std = (fresh(row) ? 1 : this.noise) / rootFanIn;
        for (let p = 0; p < dst.hiddenSize; p++) out[row * dst.hiddenSize + p] = std * init[row * dst.hiddenSize + p]!;
      }
      return out;
    }
    if (proj === 'o') {
      const W = await this.weights.readFloat32(`${t.o}.weight`);
      const colOf = (k: number) => this.heads.query[Math.floor(k / d)]! * D + (k % d);
      const out = this.mixOut(W, src.numHeads * d, colOf, shape[1]!);
      const mapped = new Set(Array.from({ length: src.numHeads * d }, (_, k) => colOf(k)));
      return this.addNoise(name, out, this.noise / rootFanIn, (i) => !mapped.has(i % shape[1]!));
    }
    if (proj === 'gate' || proj === 'up') {
      const g = await this.weights.readFloat32(t.postAttentionNorm);
      const source = await this.rows(`${t[proj]}.weight`, src.intermediateSize, h);
      const out = this.mixIn([...source, ...Array.from({ length: shape[0]! - source.length }, () => null)], g, 1 / this.c);
      // New neurons: random inputs (their down_proj columns are zero).
      out.set(random().subarray(source.length * dst.hiddenSize), source.length * dst.hiddenSize);
      return out;
    }
    if (proj === 'down') {
      const f = src.intermediateSize;
      const out = this.mixOut(await this.weights.readFloat32(`${t.down}.weight`), f, (k) => k, shape[1]!);
      return this.addNoise(name, out, this.noise / rootFanIn, (i) => i % shape[1]! >= f);
    }
    throw new Error(`grow: no rule for tensor "${name}"`);
  }

  /** Target dim of source dim j of a q/k head: the rotate-half pair of the same frequency. */
  rotaryDim(j: number): number {
    const half = this.src.headDim / 2;
    return j < half ? j * this.r : (j - half) * this.r + this.dst.headDim / 2;
  }

  /** Target kv heads holding each source kv head. */
  kvTargets(): number[][] {
    const out: number[][] = Array.from({ length: this.src.kvHeads }, () => []);
    this.heads.kvSource.forEach((j, u) => j !== null && out[j]!.push(u));
    return out;
  }
}

export interface GrowReport {
  source: string;
  spec: DecoderSpec;
}

/**
 * Writes the grown checkpoint of `source` at `target` (a Hugging Face folder, atomically, one tensor at a time:
 * memory stays near the largest target tensor), recording `options` as the synth pass.
 */
export async function growModel(source: string, target: string, shape: GrowShape, options: Record<string, unknown>): Promise<GrowReport> {
  if (!(shape.noise >= 0)) throw new InputError(`--noise ${shape.noise}: expected a number >= 0`);
  const model = await openHfModel(source);
  try {
    checkLlamaShaped(model.spec, source);
    const spec = grownSpec(model.spec, shape);
    const M = orthonormalColumns(spec.hiddenSize, model.spec.hiddenSize, fnv1a('grow/Q'));
    const grower = new Grower(model.spec, spec, model.weights, M, shape.noise);
    const dtype = ({ float32: 'F32', float16: 'F16', bfloat16: 'BF16' } as const)[spec.weightDtype];
    const tensors = checkpointTensors(spec);
    const entries: TensorEntry[] = [...tensors].map(([name, s]) => ({ name, dtype, shape: s }));
    const manifest = { format: 'llmopt-checkpoint' as const, source, passes: [passRecord('synth', options)] };
    await writeModelFolder(target, manifest, async (tmp) => {
      const produce = async (name: string) => fromFloat32(await grower.tensor(name, tensors.get(name)!), dtype);
      await writeSafetensors(join(tmp, 'model.safetensors'), entries, produce, { format: 'pt' });
      await fs.writeFile(join(tmp, 'config.json'), `${JSON.stringify(configJsonOf(spec), null, 2)}\n`);
    });
    return { source, spec };
  } finally {
    await model.close();
  }
}
