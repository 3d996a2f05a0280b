// Block-quantized weights as onnxruntime's com.microsoft MatMulNBits (linear layers) and
// GatherBlockQuantized (token embedding, sharing its bytes with a tied lm_head where the layouts agree).
import { Elem, MS_DOMAIN, type GraphBuilder } from '../../formats/onnx/graph.js';
import {
  addBias,
  canPack,
  concatConstants,
  eachLinear,
  f32bytes,
  floatLinear,
  splitPacked,
  type LinearEmitter,
  type LinearLayer,
  type PackedLinearEmitter,
} from '../../model/linear.js';
import type { WeightSource } from '../../core/weights.js';
import type { EmbeddingEmitter } from '../../model/embedding.js';
import { EMBED_TOKENS } from '../../core/spec.js';
import { quantizeRtn } from './blockwise.js';
import { blocksPerRow, type BlockQuantConfig, type BlockQuantized } from '../../core/block-quant.js';

/**
 * MatMulNBits `accuracy_level`: the lowest precision the kernel may compute A in. 0 unset (float),
 * 1 fp32, 2 fp16, 3 bf16, 4 int8 (A quantized per block to int8 on the fly: faster, less exact).
 * onnxruntime 1.30 CPU on x86-64 accepts all five; 1-3 compute exactly as 0 there.
 */
export type AccuracyLevel = 0 | 1 | 2 | 3 | 4;

/** What `quantize --to int4|int8` writes for a device when the user leaves these unsaid. */
export interface MatMulNBitsDefaults {
  accuracyLevel: AccuracyLevel;
  /** The embedding and lm_head's bits; null: float. */
  embeddingBits: 4 | 8 | null;
  /** A zero point per block. */
  asymmetric: boolean;
  /** Multiply the int8 activations' rounding residual too (accuracy level 4; {@link matMulNBitsNode}). */
  residual: boolean;
}

/** onnxruntime's own MatMulNBits defaults, and the engines' formats' scheme: float activations and embeddings, symmetric. */
export const ONNXRUNTIME_DEFAULTS: MatMulNBitsDefaults = { accuracyLevel: 0, embeddingBits: null, asymmetric: false, residual: false };

/**
 * The defaults, for the device the artifact is for. On the CPU both widths compute with int8 activations
 * (accuracy_level 4: MLAS's int8 kernel; levels 0-3 run 8-bit weights 20x slower) and keep the embedding and lm_head
 * at 8 bits (the head is a third of a small model's bytes per token). int4 takes level 4's rounding of the
 * activations as it is (+0.8% KL on aidreams-260k). int8 would lose +199% to it, so its products also multiply the
 * rounding residual (+0.0003%), and its blocks take zero points, which pays for its 8-bit embedding and head (KL 3%
 * below the float-activation, float-embedding int8 it replaces). The GPU providers keep onnxruntime's defaults
 * (level 0, float embeddings, symmetric).
 */
export function matMulNBitsDefaults(device: string, bits: 4 | 8): MatMulNBitsDefaults {
  if (device !== 'cpu') return ONNXRUNTIME_DEFAULTS;
  return { accuracyLevel: 4, embeddingBits: 8, asymmetric: bits === 8, residual: bits === 8 };
}

/** The three MatMulNBits constant inputs, laid out as the operator reads them. */
export interface MatMulNBitsPacked {
  /** B: [N, n_blocks, blob_size] with blob_size = block_size * bits / 8, codes packed low bits first. */
  weight: Uint8Array;
  /** [N, n_blocks] */
  scales: Float32Array;
  /** [N, ceil(n_blocks * bits / 8)] packed like B; null when symmetric (the op's default 2^(bits-1)). */
  zeroPoints: Uint8Array | null;
}

/** Shape of a packed matrix, which the packed bytes alone do not say. */
export interface MatMulNBitsShape {
  bits: 4 | 8;
  blockSize: number;
  /** N: output features. */
  rows: number;
  /** K: input features. */
  cols: number;
}

function checkConfig(bits: number, blockSize: number): void {
  if (bits !== 4 && bits !== 8) throw new Error(`MatMulNBits: bits ${bits} not supported (4 or 8)`);
  // The operator's own requirement: a power of two, at least 16.
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0)
    throw new Error(`MatMulNBits: block_size ${blockSize} is not a power of two >= 16`);
}

/** Bytes per block of B. */
export const blobSize = (bits: number, blockSize: number) => (blockSize * bits) / 8;

/** Bytes per row of packed zero points. */
export const zeroPointBytesPerRow = (bits: number, nBlocks: number) => Math.ceil((nBlocks * bits) / 8);

/** Writes code `v` as element `i` of a low-bits-first stream of `bits`-wide codes. */
function putCode(out: Uint8Array, base: number, i: number, v: number, bits: number): void {
  if (bits === 8) {
    out[base + i] = v;
    return;
  }
  const j = base + (i >> 1);
  out[j] = out[j]! | (i & 1 ? v << 4 : v);
}

function getCode(src: Uint8Array, base: number, i: number, bits: number): number {
  if (bits === 8) return src[base + i]!;
  const byte = src[base + (i >> 1)]!;
  return i & 1 ? byte >> 4 : byte & 0x0f;
}

/**
 * Packs a block-quantized [N, K] matrix the way MatMulNBits reads it. A ragged last block is padded
 * with its own zero-point code, so the padding dequantizes to exactly 0 whatever a kernel does with it.
 */
export function packMatMulNBits(q: BlockQuantized): MatMulNBitsPacked {
  checkConfig(q.bits, q.blockSize);
  const { bits, blockSize, rows, cols } = q;
  const nb = blocksPerRow(cols, blockSize);
  if (q.blocksPerRow !== nb) throw new Error(`MatMulNBits: ${q.blocksPerRow} blocks per row, expected ${nb}`);
  const blob = blobSize(bits, blockSize);
  const maxCode = (1 << bits) - 1;
  const half = 1 << (bits - 1);
  const weight = new Uint8Array(rows * nb * blob);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const base = (r * nb + b) * blob;
      const zero = q.zeroPoints ? q.zeroPoints[r * nb + b]! : half;
      for (let i = 0; i < blockSize; i++) {
        const c = b * blockSize + i;
        const code = c < cols ? q.codes[r * cols + c]! : zero;
        if (code > maxCode) throw new Error(`MatMulNBits: code ${code} at [${r}, ${c}] does not fit in ${bits} bits`);
        putCode(weight, base, i, code, bits);
      }
    }
  }
  let zeroPoints: Uint8Array | null = null;
  if (q.zeroPoints) {
    const zpRow = zeroPointBytesPerRow(bits, nb);
    zeroPoints = new Uint8Array(rows * zpRow);
    for (let r = 0; r < rows; r++) for (let b = 0; b < nb; b++) putCode(zeroPoints, r * zpRow, b, q.zeroPoints[r * nb + b]!, bits);
  }
  return { weight, scales: q.scales.slice(), zeroPoints };
}

/** The inverse of {@link packMatMulNBits} (padding dropped): for tests and for reading artifacts back. */
export function unpackMatMulNBits(packed: MatMulNBitsPacked, shape: MatMulNBitsShape): BlockQuantized {
  const { bits, blockSize, rows, cols } = shape;
  checkConfig(bits, blockSize);
  const nb = blocksPerRow(cols, blockSize);
  const blob = blobSize(bits, blockSize);
  if (packed.weight.length !== rows * nb * blob)
    throw new Error(`MatMulNBits: ${packed.weight.length} weight bytes, expected ${rows * nb * blob}`);
  if (packed.scales.length !== rows * nb) throw new Error(`MatMulNBits: ${packed.scales.length} scales, expected ${rows * nb}`);
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const b = Math.floor(c / blockSize);
      codes[r * cols + c] = getCode(packed.weight, (r * nb + b) * blob, c - b * blockSize, bits);
    }
  }
  let zeroPoints: Uint8Array | null = null;
  if (packed.zeroPoints) {
    const zpRow = zeroPointBytesPerRow(bits, nb);
    zeroPoints = new Uint8Array(rows * nb);
    for (let r = 0; r < rows; r++) for (let b = 0; b < nb; b++) zeroPoints[r * nb + b] = getCode(packed.zeroPoints, r * zpRow, b, bits);
  }
  return {
    bits,
    blockSize,
    symmetric: zeroPoints === null,
    rows,
    cols,
    blocksPerRow: nb,
    codes,
    scales: packed.scales.slice(),
    zeroPoints,
  };
}

/**
 * Codes of a [rows, cols] matrix as one low-bits-first stream with no per-block padding: the uint8
 * `data` of GatherBlockQuantized, shape [rows, cols * bits / 8]. When cols is a multiple of the block
 * size these are the very bytes of {@link packMatMulNBits}'s weight.
 */
export function packGatherData(q: BlockQuantized): Uint8Array {
  if ((q.cols * q.bits) % 8 !== 0)
    throw new Error(`GatherBlockQuantized: a row of ${q.cols} ${q.bits}-bit codes is not a whole number of bytes`);
  const out = new Uint8Array((q.rows * q.cols * q.bits) / 8);
  for (let i = 0; i < q.codes.length; i++) putCode(out, 0, i, q.codes[i]!, q.bits);
  return out;
}

/** Names of the initializers of one MatMulNBits weight. */
export interface MatMulNBitsNames {
  weight: string;
  scales: string;
  zeroPoints: string | null;
}

/** Writes B as initializer `${prefix}_Q{bits}` [N, n_blocks, blob_size]. */
function writeWeight(g: GraphBuilder, prefix: string, q: BlockQuantized, weight: Uint8Array): string {
  return g.initializer(`${prefix}_Q${q.bits}`, Elem.UINT8, [q.rows, q.blocksPerRow, blobSize(q.bits, q.blockSize)], weight);
}

/**
 * Writes scales and zero points as `${prefix}_scales` and `${prefix}_zp`, both 2-D (the current form;
 * 1-D is accepted only for old models) so that GatherBlockQuantized, which wants them with the rank of
 * its data, can share them.
 */
function writeScales(g: GraphBuilder, prefix: string, q: BlockQuantized, packed: MatMulNBitsPacked): Omit<MatMulNBitsNames, 'weight'> {
  const nb = q.blocksPerRow;
  return {
    scales: g.initializer(`${prefix}_scales`, Elem.FLOAT, [q.rows, nb], f32bytes(packed.scales)),
    zeroPoints: packed.zeroPoints
      ? g.initializer(`${prefix}_zp`, Elem.UINT8, [q.rows, zeroPointBytesPerRow(q.bits, nb)], packed.zeroPoints)
      : null,
  };
}

/** Writes a packed weight as initializers `${prefix}_Q{bits}`, `${prefix}_scales`, `${prefix}_zp`. */
export function writeMatMulNBits(g: GraphBuilder, prefix: string, q: BlockQuantized, packed = packMatMulNBits(q)): MatMulNBitsNames {
  return { weight: writeWeight(g, prefix, q, packed.weight), ...writeScales(g, prefix, q, packed) };
}

/**
 * A MatMulNBits node: x [..., K] -> [..., N]. With `residual` (accuracy level 4 only; x must be [B, S, K]) the
 * product also multiplies what the int8 activations lose: see {@link activationResidual}.
 */
export function matMulNBitsNode(
  g: GraphBuilder,
  names: MatMulNBitsNames,
  shape: MatMulNBitsShape,
  x: string,
  path: string,
  accuracyLevel: AccuracyLevel,
  residual = false,
): string {
  if (residual && accuracyLevel !== 4) throw new Error(`${path}: the activation residual needs accuracy_level 4`);
  const a = residual ? withResidual(g, x, shape, path) : x;
  const inputs = [a, names.weight, names.scales, ...(names.zeroPoints ? [names.zeroPoints] : [])];
  const y = g.op(
    'MatMulNBits',
    inputs,
    `${path}/MatMulNBits`,
    {
      K: { int: shape.cols },
      N: { int: shape.rows },
      bits: { int: shape.bits },
      block_size: { int: shape.blockSize },
      accuracy_level: { int: accuracyLevel },
    },
    MS_DOMAIN,
  );
  if (!residual) return y;
  // Rows [0, B) are W Q(x), rows [B, 2B) W Q(x - Q(x)): their sum is W x to within Q's error on the residual.
  const [rounded, rest] = g.node('Split', [y], { name: `${path}/Residual/Split`, attrs: { axis: { int: 0 } }, outputs: 2 });
  return g.op('Add', [rounded!, rest!], `${path}/Residual/Add`);
}

/** Each graph's [x; residual] inputs by x and block size: products reading one x (q, k, v unpacked) share them. */
const stacked = new WeakMap<GraphBuilder, Map<string, string>>();

/** x [B, S, K] with its residual stacked under it, [2B, S, K]: built once per graph, input and block size. */
function withResidual(g: GraphBuilder, x: string, shape: MatMulNBitsShape, path: string): string {
  const made = stacked.get(g) ?? new Map<string, string>();
  stacked.set(g, made);
  const key = `${x}|${shape.cols}|${shape.blockSize}`;
  const known = made.get(key);
  if (known) return known;
  const a = g.op('Concat', [x, activationResidual(g, x, shape, path)], `${path}/Residual/Concat`, { axis: { int: 0 } });
  made.set(key, a);
  return a;
}

/**
 * What accuracy level 4 loses of x [B, S, K]: MLAS quantizes each block of `blockSize` activations along K to int8
 * (q = round(a * 127 / max|a|), the value q * max|a| / 127) before its integer product; x minus that value, computed
 * here by the same rule. Multiplied as rows of their own (quantized again, so with 1/127 of the first rounding's error),
 * they give the level-4 product float accuracy for one more row per row: at batch 1 the weights are read once for both,
 * so the step costs little more, while at large batches (prefill) the integer work doubles.
 */
function activationResidual(g: GraphBuilder, x: string, shape: MatMulNBitsShape, path: string): string {
  const p = `${path}/Residual`;
  const { cols: K, blockSize } = shape;
  const nb = blocksPerRow(K, blockSize);
  const Kp = nb * blockSize;
  // A ragged last block is padded with zeros, as MLAS pads it.
  const padded =
    Kp === K ? x : g.op('Pad', [x, g.constant(`/const/pad_last_${Kp - K}`, Elem.INT64, [6], [0, 0, 0, 0, 0, Kp - K])], `${p}/Pad`);
  const blocks = g.op(
    'Reshape',
    [padded, g.constant(`/const/shape_0_0_${nb}_${blockSize}`, Elem.INT64, [4], [0, 0, nb, blockSize])],
    `${p}/Blocks`,
  );
  const max = g.op('ReduceMax', [g.op('Abs', [blocks], `${p}/Abs`)], `${p}/ReduceMax`, { axes: { ints: [3] }, keepdims: { int: 1 } });
  const c127 = g.constant('/const/f32_127', Elem.FLOAT, [], [127]);
  // The 1e-30 keeps a block of zeros from 0 x inf (its codes are 0 either way); above a max of about 1e-22 it is below
  // half an ulp, so the inverse is exactly 127 / max.
  const inverse = g.op(
    'Div',
    [c127, g.op('Add', [max, g.constant('/const/f32_1e-30', Elem.FLOAT, [], [1e-30])], `${p}/Guard`)],
    `${p}/Inverse`,
  );
  const codes = g.op('Round', [g.op('Mul', [blocks, inverse], `${p}/Scale`)], `${p}/Round`);
  const kept = g.op('Mul', [codes, g.op('Div', [max, c127], `${p}/Step`)], `${p}/Dequantize`);
  const lost = g.op('Sub', [blocks, kept], `${p}/Sub`);
  const flat = g.op('Reshape', [lost, g.constant(`/const/shape_0_0_${Kp}`, Elem.INT64, [3], [0, 0, Kp])], `${p}/Flat`);
  if (Kp === K) return flat;
  const slice = (name: string, v: number) => g.constant(`/const/${name}_${v}`, Elem.INT64, [1], [v]);
  return g.op('Slice', [flat, slice('zero', 0), slice('end', K), slice('axis', 2)], `${p}/Slice`);
}

/** Stored bytes of a packed weight (B, scales and zero points). */
export const packedBytes = (p: MatMulNBitsPacked) => p.weight.byteLength + p.scales.byteLength + (p.zeroPoints?.byteLength ?? 0);

/** What one quantized layer costs, for reports. */
export interface QuantizedLayerBytes {
  module: string;
  /** float32 bytes of the weight before quantization. */
  floatBytes: number;
  /** Bytes stored for it now: packed codes, scales and zero points. */
  quantizedBytes: number;
}

export interface MatMulNBitsLinearOptions {
  /** Quantizes one weight [out, in] (RTN, or a lookup of precomputed GPTQ results). */
  quantize: (layer: LinearLayer, w: Float32Array) => BlockQuantized | Promise<BlockQuantized>;
  accuracyLevel: AccuracyLevel;
  /** At accuracy level 4: each product also multiplies its activations' int8 rounding residual. */
  residual?: boolean;
  /** Modules kept in float32 (e.g. `lm_head`). */
  exclude?: (module: string) => boolean;
  /** Called once per quantized layer. */
  onLayer?: (bytes: QuantizedLayerBytes) => void;
}

/** Whether block-quantized weights can be multiplied as one MatMulNBits: the same bits, block size and zero-point form. */
const sameScheme = (qs: BlockQuantized[]): boolean =>
  qs.every((q) => q.bits === qs[0]!.bits && q.blockSize === qs[0]!.blockSize && (q.zeroPoints === null) === (qs[0]!.zeroPoints === null));

/**
 * A LinearEmitter that stores each weight block-quantized and multiplies with MatMulNBits. Packed groups (q/k/v,
 * gate/up) are quantized module by module as always (so calibration, GPTQ, AWQ and mixes see each module) and
 * stored under each module's names; with one scheme for all of them they share one MatMulNBits over their
 * initializers concatenated along N. Per-row blocks make that product's codes, scales and zero points exactly the
 * separate ones', row for row. Groups with an excluded module or different bits are emitted one by one.
 */
export function matMulNBitsLinear(opts: MatMulNBitsLinearOptions): LinearEmitter {
  const quantized = async (weights: WeightSource, layer: LinearLayer) => {
    const w = await weights.readFloat32(`${layer.module}.weight`);
    const q = await opts.quantize(layer, w);
    if (q.rows !== layer.outFeatures || q.cols !== layer.inFeatures) {
      throw new Error(`${layer.module}: quantized as [${q.rows}, ${q.cols}], the layer is [${layer.outFeatures}, ${layer.inFeatures}]`);
    }
    return { q, floatBytes: w.byteLength };
  };
  const store = (g: GraphBuilder, layer: LinearLayer, q: BlockQuantized, floatBytes: number): MatMulNBitsNames => {
    const packed = packMatMulNBits(q);
    opts.onLayer?.({ module: layer.module, floatBytes, quantizedBytes: packedBytes(packed) });
    return writeMatMulNBits(g, `${layer.module}.weight`, q, packed);
  };
  const one = async (
    g: GraphBuilder,
    weights: WeightSource,
    layer: LinearLayer,
    x: string,
    given?: Awaited<ReturnType<typeof quantized>>,
  ) => {
    if (opts.exclude?.(layer.module)) return floatLinear(g, weights, layer, x);
    const { q, floatBytes } = given ?? (await quantized(weights, layer));
    const y = matMulNBitsNode(g, store(g, layer, q, floatBytes), q, x, layer.path, opts.accuracyLevel, opts.residual);
    return addBias(g, weights, layer, y);
  };
  const packed: PackedLinearEmitter = async (g, weights, layers, x, path) => {
    const excluded = layers.filter((l) => opts.exclude?.(l.module)).length;
    if (excluded === layers.length) return floatLinear.packed!(g, weights, layers, x, path);
    if (excluded > 0 || !canPack(layers)) return eachLinear(g, weights, one, layers, x);
    const qs: Awaited<ReturnType<typeof quantized>>[] = [];
    for (const layer of layers) qs.push(await quantized(weights, layer));
    if (!sameScheme(qs.map((r) => r.q))) {
      const outs: string[] = [];
      for (const [i, layer] of layers.entries()) outs.push(await one(g, weights, layer, x, qs[i]));
      return outs;
    }
    const names = layers.map((layer, i) => store(g, layer, qs[i]!.q, qs[i]!.floatBytes));
    const cat = (pick: (n: MatMulNBitsNames) => string, what: string) => concatConstants(g, names.map(pick), 0, `${path}/${what}/Concat`);
    const joined: MatMulNBitsNames = {
      weight: cat((n) => n.weight, 'Weight'),
      scales: cat((n) => n.scales, 'Scales'),
      zeroPoints: names[0]!.zeroPoints === null ? null : cat((n) => n.zeroPoints!, 'ZeroPoints'),
    };
    const first = qs[0]!.q;
    const shape: MatMulNBitsShape = {
      bits: first.bits,
      blockSize: first.blockSize,
      rows: sum(layers.map((l) => l.outFeatures)),
      cols: first.cols,
    };
    return splitPacked(g, weights, layers, matMulNBitsNode(g, joined, shape, x, path, opts.accuracyLevel, opts.residual), path);
  };
  return Object.assign((g: GraphBuilder, weights: WeightSource, layer: LinearLayer, x: string) => one(g, weights, layer, x), { packed });
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

export interface QuantizedEmbeddingOptions {
  /** accuracy_level of the tied lm_head's MatMulNBits (default 0). */
  accuracyLevel?: AccuracyLevel;
  /** At accuracy level 4: the tied head also multiplies its input's int8 rounding residual. */
  residual?: boolean;
  onLayer?: (bytes: QuantizedLayerBytes) => void;
}

/**
 * The token embedding block-quantized (RTN) and gathered with GatherBlockQuantized; a tied lm_head
 * multiplies by the same codes with MatMulNBits. Scales and zero points are always shared. The codes
 * are shared too when hidden_size is a multiple of the block size, since MatMulNBits' B [V, h/bs, bs*bits/8]
 * is then byte for byte GatherBlockQuantized's data [V, h*bits/8]: B is stored once and the gather
 * reads it through a Reshape. Otherwise B pads each row's last block and the gather data does not,
 * so the head gets its own padded copy (`lm_head.weight_Q{bits}`). Data is uint8 with a `bits`
 * attribute (onnxruntime's CPU kernel requires gather_axis 0 and quantize_axis last for uint8), not
 * uint4: uint8 is what MatMulNBits reads, and its default zero point is 2^(bits-1) as here (uint4's is 0).
 * onnxruntime CPU constant-folds the Reshape at session creation, so in memory the gather holds its
 * own copy while MatMulNBits prepacks B; the file stores the codes once.
 */
export function quantizedEmbedding(cfg: BlockQuantConfig, opts: QuantizedEmbeddingOptions = {}): EmbeddingEmitter {
  checkConfig(cfg.bits, cfg.blockSize);
  // tiedHead runs after gather on the same graph and needs what gather stored.
  const stored = new WeakMap<GraphBuilder, { head: MatMulNBitsNames; shape: MatMulNBitsShape }>();
  return {
    async gather(g, weights, spec, inputIds) {
      const V = spec.vocabSize;
      const h = spec.hiddenSize;
      if ((h * cfg.bits) % 8 !== 0)
        throw new Error(`GatherBlockQuantized: hidden_size ${h} is odd, which ${cfg.bits}-bit packed rows cannot hold`);
      const w = await weights.readFloat32(EMBED_TOKENS);
      const q = quantizeRtn(w, V, h, cfg);
      const packed = packMatMulNBits(q);
      const shape: MatMulNBitsShape = { bits: cfg.bits, blockSize: cfg.blockSize, rows: V, cols: h };
      const prefix = EMBED_TOKENS;
      const rowBytes = (h * cfg.bits) / 8;
      const shared = writeScales(g, prefix, q, packed);
      let bytes = packed.scales.byteLength + (packed.zeroPoints?.byteLength ?? 0);
      let data: string;
      let head: MatMulNBitsNames | null = null;
      if (spec.tiedEmbeddings && h % cfg.blockSize === 0) {
        // One copy of the codes, in MatMulNBits' shape; the gather sees it as [V, h*bits/8].
        head = { weight: writeWeight(g, prefix, q, packed.weight), ...shared };
        const dims = g.constant(`/const/shape_${V}_${rowBytes}`, Elem.INT64, [2], [V, rowBytes]);
        data = g.op('Reshape', [head.weight, dims], '/model/embed_tokens/DataReshape');
        bytes += packed.weight.byteLength;
      } else {
        const gatherData = packGatherData(q);
        data = g.initializer(`${prefix}_Q${cfg.bits}`, Elem.UINT8, [V, rowBytes], gatherData);
        bytes += gatherData.byteLength;
        if (spec.tiedEmbeddings) {
          // hidden_size is not a multiple of the block size: the head needs B's padded blocks.
          head = { weight: writeWeight(g, 'lm_head.weight', q, packed.weight), ...shared };
          bytes += packed.weight.byteLength;
        }
      }
      if (head) stored.set(g, { head, shape });
      opts.onLayer?.({ module: 'model.embed_tokens', floatBytes: w.byteLength, quantizedBytes: bytes });
      const inputs = [data, inputIds, shared.scales, ...(shared.zeroPoints ? [shared.zeroPoints] : [])];
      return g.op(
        'GatherBlockQuantized',
        inputs,
        '/model/embed_tokens/GatherBlockQuantized',
        {
          gather_axis: { int: 0 },
          quantize_axis: { int: 1 },
          block_size: { int: cfg.blockSize },
          bits: { int: cfg.bits },
        },
        MS_DOMAIN,
      );
    },
    tiedHead(g, _spec, x) {
      const s = stored.get(g);
      if (!s) throw new Error('quantizedEmbedding: tiedHead called before gather on this graph');
      return matMulNBitsNode(g, s.head, s.shape, x, '/lm_head', opts.accuracyLevel ?? 0, opts.residual);
    },
  };
}
