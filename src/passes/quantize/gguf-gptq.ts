// GPTQ onto ggml's block types: the same error-compensating column loop as the ONNX path (gptqOnGrid),
// rounding onto the grid each GGUF block stores, so a calibrated model loads in llama.cpp unchanged.
import { InputError } from '../../core/errors.js';
import { GGML_TYPES, type GgmlType } from '../../formats/gguf/ggml-types.js';
import { fp16ToFp32 } from '../../formats/gguf/quants/float.js';
import { quantizeRows } from '../../formats/gguf/quants/index.js';
import {
  chooseKScales,
  chooseQ6Scales,
  K_BLOCK_BYTES,
  type KScales,
  kSubBlock,
  packKBlock,
  packQ6Block,
  type Q6Scales,
} from '../../formats/gguf/quants/kquants.js';
import { nearestInt } from '../../formats/gguf/quants/search.js';
import {
  chooseLegacyBlock,
  LEGACY_BLOCK_BYTES,
  type LegacyBlock,
  type LegacyType,
  packLegacyBlock,
  searchQ8Block,
  weightedBlock,
} from '../../formats/gguf/quants/legacy.js';
import { type GptqGrid, type GptqRun, gptqOnGrid } from './gptq.js';

const fr = Math.fround;
const clamp = (v: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, v));
/** Round half away from zero (the grid's nearest code; ties are measure-zero for real weights). */
const roundHalfAway = (v: number) => (v < 0 ? -Math.round(-v) : Math.round(v));

/**
 * The legacy types' grid, one 32-column block per group: llama.cpp's scale (and min) for the block's
 * current, error-updated weights when GPTQ reaches it (its importance-weighted `_impl` search, or the
 * `_ref` round-to-nearest choice without importance, on the float32 values), then each column rounded
 * to the nearest level of the stored fp16 grid.
 */
class LegacyGrid implements GptqGrid {
  readonly groupSize = 32;
  readonly codes: Uint8Array;
  readonly blocks: LegacyBlock[];
  private readonly d: Float32Array;
  private readonly m: Float32Array;
  private readonly x = new Float32Array(32);
  private readonly scratch = new Uint8Array(32);
  private readonly nb: number;
  private readonly weight = new Float32Array(32);
  private readonly aux = new Uint8Array(32);
  constructor(
    private readonly type: LegacyType,
    rows: number,
    private readonly cols: number,
    private readonly importance?: { values: Float32Array; sigma2: Float32Array },
    private readonly searchQ8 = false,
  ) {
    this.nb = cols / 32;
    this.codes = new Uint8Array(rows * cols);
    this.blocks = new Array(rows * this.nb);
    this.d = new Float32Array(rows * this.nb);
    this.m = new Float32Array(rows * this.nb);
  }
  choose(r: number, g: number, values: ArrayLike<number>, start: number): void {
    for (let j = 0; j < 32; j++) this.x[j] = values[start + j]!;
    const imp = this.importance;
    let p: LegacyBlock;
    if (imp && this.type !== 'Q8_0') {
      const s2 = imp.sigma2[r]!;
      for (let j = 0; j < 32; j++) this.weight[j] = fr(imp.values[g * 32 + j]! * fr(Math.sqrt(fr(s2 + fr(this.x[j]! * this.x[j]!)))));
      p = weightedBlock(this.type, this.x, 0, this.weight, this.scratch, this.aux);
    } else if (this.type === 'Q8_0' && this.searchQ8) {
      p = searchQ8Block(this.x, 0, this.scratch, imp ? imp.values.subarray(g * 32, g * 32 + 32) : null);
    } else {
      p = chooseLegacyBlock(this.type, this.x, 0, this.scratch);
    }
    const i = r * this.nb + g;
    this.blocks[i] = p;
    this.d[i] = fp16ToFp32(p.d);
    this.m[i] = fp16ToFp32(p.m);
  }
  round(r: number, c: number, g: number, x: number): number {
    const i = r * this.nb + g;
    const d = this.d[i]!;
    const at = r * this.cols + c;
    switch (this.type) {
      case 'Q8_0': {
        const q = d ? clamp(roundHalfAway(x / d), -127, 127) : 0;
        this.codes[at] = q & 0xff;
        return q * d;
      }
      case 'Q4_0':
      case 'Q5_0': {
        const half = this.type === 'Q4_0' ? 8 : 16;
        const q = d ? clamp(roundHalfAway(x / d) + half, 0, 2 * half - 1) : half;
        this.codes[at] = q;
        return (q - half) * d;
      }
      default: {
        const m = this.m[i]!;
        const q = d ? clamp(roundHalfAway((x - m) / d), 0, this.type === 'Q4_1' ? 15 : 31) : 0;
        this.codes[at] = q;
        return fr(fr(q * d) + m);
      }
    }
  }
  pack(rows: number): Uint8Array {
    const size = LEGACY_BLOCK_BYTES[this.type];
    const out = new Uint8Array(rows * this.nb * size);
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < this.nb; b++) {
        const at = r * this.cols + b * 32;
        packLegacyBlock(this.type, out, (r * this.nb + b) * size, this.blocks[r * this.nb + b]!, this.codes.subarray(at, at + 32));
      }
    }
    return out;
  }
}

/**
 * The K-quants' grid, one 256-column super-block per group. The super-block's scales are chosen together,
 * by llama.cpp's own search (make_qkx2/qkx3_quants and the 6-bit packing; Q6_K's make_qx_quants), from its
 * current, error-updated weights when GPTQ reaches its first column; GPTQ then rounds each column onto
 * that fixed grid, with llama.cpp's own requantizing expression (so with no correlation between inputs the
 * codes are llama.cpp's round-to-nearest ones). Choosing per sub-block as columns arrive is not possible: the sub-blocks' 6-bit scales
 * are codes relative to the super-block's largest (fp16 d / dmin), so they can only be chosen together.
 */
class KGrid implements GptqGrid {
  readonly groupSize = 256;
  readonly codes: Uint8Array;
  private readonly kScales: KScales[] = [];
  private readonly q6Scales: Q6Scales[] = [];
  /** Per sub-block float32 scale and offset, [rows * nb * subBlocks]. */
  private readonly d: Float32Array;
  private readonly m: Float32Array;
  private readonly x = new Float32Array(256);
  private readonly scratch = new Uint8Array(256);
  private readonly nb: number;
  private readonly sub: number;
  constructor(
    private readonly type: 'Q4_K' | 'Q5_K' | 'Q6_K',
    rows: number,
    private readonly cols: number,
    private readonly importance?: Float32Array,
  ) {
    this.nb = cols / 256;
    this.sub = type === 'Q6_K' ? 16 : 32;
    this.codes = new Uint8Array(rows * cols);
    this.d = new Float32Array((rows * cols) / this.sub);
    this.m = new Float32Array((rows * cols) / this.sub);
  }
  choose(r: number, g: number, values: ArrayLike<number>, start: number): void {
    for (let j = 0; j < 256; j++) this.x[j] = values[start + j]!;
    const i = r * this.nb + g;
    const first = (i * 256) / this.sub;
    if (this.type === 'Q6_K') {
      const s = chooseQ6Scales(this.x, 0, this.scratch, this.importance, g * 256);
      this.q6Scales[i] = s;
      const d16 = fp16ToFp32(s.d);
      for (let j = 0; j < 16; j++) this.d[first + j] = s.zero ? 0 : fr(d16 * s.sc[j]!);
      return;
    }
    const s = chooseKScales(this.type, this.x, 0, this.scratch, this.importance, g * 256);
    this.kScales[i] = s;
    for (let j = 0; j < 8; j++) {
      const { d, m } = kSubBlock(s, j);
      this.d[first + j] = d;
      this.m[first + j] = m;
    }
  }
  round(r: number, c: number, g: number, x: number): number {
    const at = r * this.cols + c;
    const j = ((r * this.nb + g) * 256 + (c % 256)) / this.sub;
    const k = Math.floor(j);
    const d = this.d[k]!;
    if (this.type === 'Q6_K') {
      const q = d ? clamp(nearestInt(fr(x / d)), -32, 31) : 0;
      this.codes[at] = q + 32;
      return fr(d * q);
    }
    const m = this.m[k]!;
    const q = d ? clamp(nearestInt(fr(fr(x + m) / d)), 0, this.type === 'Q4_K' ? 15 : 31) : 0;
    this.codes[at] = q;
    return fr(fr(d * q) - m);
  }
  pack(rows: number): Uint8Array {
    const size = K_BLOCK_BYTES[this.type];
    const out = new Uint8Array(rows * this.nb * size);
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < this.nb; b++) {
        const i = r * this.nb + b;
        const codes = this.codes.subarray(r * this.cols + b * 256, r * this.cols + (b + 1) * 256);
        if (this.type === 'Q6_K') {
          const s = this.q6Scales[i]!;
          if (!s.zero) packQ6Block(out, i * size, s, codes); // an all-zero super-block stays zero bytes, as llama.cpp writes it
        } else {
          packKBlock(this.type, out, i * size, this.kScales[i]!, codes);
        }
      }
    }
    return out;
  }
}

/** diag(H) / n: each input's mean square over the calibration tokens (llama-imatrix's measure). */
function meanSquares(H: Float64Array, cols: number, nSamples: number): Float32Array {
  return Float32Array.from({ length: cols }, (_, j) => H[j * cols + j]! / nSamples);
}

/** Each row's mean square (llama.cpp's sigma2 of the importance-weighted legacy search), in float32. */
function rowSigma2(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < cols; j++) s = fr(s + fr(w[r * cols + j]! * w[r * cols + j]!));
    out[r] = fr(s / cols);
  }
  return out;
}

/** GPTQ settings for the GGUF path (see gptq.ts). */
export interface GgufGptqConfig {
  dampening?: number;
  actOrder?: boolean;
  /**
   * Per-column importance [cols] for the block scales: llama.cpp's importance-weighted search (its
   * `--imatrix` path). Default diag(H) / nSamples, the mean x^2 per input that llama-imatrix measures;
   * null for llama.cpp's plain round-to-nearest choice.
   */
  importance?: Float32Array | null;
  /** Q8_0: each block's scale by the shrink search (legacy.ts searchQ8Block) weighted by the importance (--clip search). */
  searchQ8?: boolean;
}

/**
 * GPTQ-quantizes W [rows, cols] (H = sum of x x^T over `nSamples` calibration tokens) into `type`'s GGUF
 * blocks: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (a block's scale and min chosen by llama.cpp's search when GPTQ
 * reaches the block) and Q4_K, Q5_K, Q6_K (a super-block's scales by llama.cpp's search, then GPTQ
 * rounding on them). The search is llama.cpp's importance-weighted one with importance diag(H) / n by
 * default: on a layer of rank ~200 inputs (test/passes/gguf-gptq.test.ts) plain-RTN scales left GPTQ
 * no better than llama.cpp's own imatrix RTN for Q4_1, these beat it for every type. F32 / F16 / BF16
 * have no grid to round onto and are converted as they are. With act order the groups' parameters come
 * from the original weights, up front (static groups).
 */
export function gptqQuantizeGguf(
  type: GgmlType,
  w: Float32Array,
  rows: number,
  cols: number,
  H: Float64Array,
  nSamples: number,
  cfg: GgufGptqConfig,
): Uint8Array {
  const block = GGML_TYPES[type].blockSize;
  if (cols % block !== 0) throw new InputError(`${type}: a row of ${cols} columns is not a multiple of its ${block}-element block`);
  if (type === 'F32' || type === 'F16' || type === 'BF16') return quantizeRows(type, w, rows, cols);
  const run: GptqRun = { dampening: cfg.dampening, actOrder: cfg.actOrder };
  const imp = cfg.importance === null ? undefined : (cfg.importance ?? meanSquares(H, cols, nSamples));
  if (imp !== undefined && imp.length !== cols) throw new InputError(`${type}: importance has ${imp.length} values for ${cols} columns`);
  if (type === 'Q4_K' || type === 'Q5_K' || type === 'Q6_K') {
    const grid = new KGrid(type, rows, cols, imp);
    gptqOnGrid(w, rows, cols, H, nSamples, grid, run);
    return grid.pack(rows);
  }
  const grid = new LegacyGrid(type, rows, cols, imp && { values: imp, sigma2: rowSigma2(w, rows, cols) }, cfg.searchQ8);
  gptqOnGrid(w, rows, cols, H, nSamples, grid, run);
  return grid.pack(rows);
}
