// Hugging Face checkpoints in the compressed-tensors layout that vLLM serves for weight-only int4/int8
// quantization: written from BlockQuantized layers, and read back as a WeightSource of dequantized weights.

/*
 * The layout, as llm-compressor writes it and vLLM loads it. Sources: compressed-tensors
 * compressors/quantized_compressors/pack_quantized.py, compressors/pack_quantized/helpers.py (pack_to_int32),
 * compressors/model_compressors/model_compressor.py (update_config), quantization/lifecycle/forward.py;
 * llm-compressor transformers/compression/quantization_format.py; vLLM
 * compressed_tensors/schemes/compressed_tensors_wNa16.py and utils/marlin_utils.py.
 *
 * config.json gains `quantization_config` = { quant_method: "compressed-tensors", format: "pack-quantized",
 * quantization_status: "compressed", config_groups: { group_0: { targets: ["Linear"], weights: { num_bits,
 * type: "int", symmetric, strategy: "group", group_size, dynamic: false, actorder: null, ... },
 * input_activations: null, output_activations: null } }, ignore: ["lm_head", ...], kv_cache_scheme: null }.
 * llm-compressor picks "pack-quantized" for every weight-only int4 and int8 scheme (W4A16 and W8A16);
 * vLLM's WNA16 scheme (Marlin and friends) only accepts that format for weight-only int.
 *
 * Per quantized Linear `<m>` (weight [out, in]):
 *   <m>.weight_packed  I32 [out, ceil(in*bits/32)]: value i of a word sits at bits [i*bits, (i+1)*bits)
 *                      (low nibble first), each value being the signed code q plus 2^(bits-1); padding bits 0.
 *   <m>.weight_scale   float [out, n_groups] in the weights' dtype (llm-compressor), cast by vLLM on load.
 *   <m>.weight_shape   I64 [2] = [out, in].
 *   <m>.weight_zero_point (asymmetric only) I32 [ceil(out*bits/32), n_groups]: signed zero points plus
 *                      2^(bits-1), packed the same way but along dim 0 (out). Absent when symmetric.
 * Dequantization is w = (q - zp) * scale with q, zp signed. Since the stored value is q + 2^(bits-1), the
 * packed fields hold exactly our unsigned codes and unsigned zero points (zero 2^(bits-1) when symmetric).
 *
 * Divisibility: compressed-tensors' quantize refuses in % group_size != 0 (when in >= group_size), and vLLM
 * sizes weight_packed as in // pack_factor and weight_scale as in // group_size, so the writer requires both.
 * vLLM's Marlin kernels support zero points with 4 bits only, so asymmetric 8-bit is refused too.
 */

import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../core/errors.js';
import { dequantize, type BlockQuantized } from '../core/block-quant.js';
import type { WeightSource } from '../core/weights.js';
import { fromFloat32, toFloat32, type DType } from './dtype.js';
import { readJsonFile } from './hf-config.js';
import { Checkpoint, writeShardedCheckpoint, type TensorEntry, type TensorInfo } from './safetensors.js';

type Json = Record<string, unknown>;

/** The only format the writer produces; the reader also takes the unpacked int formats. */
export const PACK_QUANTIZED = 'pack-quantized';
const READABLE_FORMATS = [PACK_QUANTIZED, 'int-quantized', 'naive-quantized'];
const SUPPORTED =
  'supported: weight-only int4/int8 with strategy group or channel, format pack-quantized, int-quantized or naive-quantized';

/** Options of {@link writeCompressedTensorsCheckpoint}. */
export interface CompressedTensorsWriteOptions {
  /** The source model's config.json; copied with `quantization_config` set. */
  sourceConfig: Json;
  /** Quantized Linear modules by module name (e.g. model.layers.0.self_attn.q_proj); all share one scheme. */
  layers: Map<string, BlockQuantized>;
  /** dtype of the stored scales; llm-compressor stores them in the weights' dtype. */
  scaleDtype: 'F32' | 'F16' | 'BF16';
  /** Unquantized tensors, copied through unchanged. */
  floatTensors: TensorEntry[];
  /** Raw bytes of one of `floatTensors`. */
  readFloat: (name: string) => Promise<Uint8Array>;
  /** Linear modules deliberately left in float (e.g. lm_head), listed in quantization_config.ignore. */
  ignore: string[];
  /** Largest shard; defaults to 5 GB like Hugging Face. */
  maxShardBytes?: number;
  /** compressed-tensors version recorded in quantization_config.version (it is discarded on load; omitted by default). */
  version?: string;
}

/** Whether a config.json object declares a compressed-tensors checkpoint. */
export function isCompressedTensors(config: Json): boolean {
  const qc = config.quantization_config;
  return isObject(qc) && qc.quant_method === 'compressed-tensors';
}

/**
 * Packs unsigned `bits`-wide values of a row-major [rows, cols] matrix into little-endian int32 words along
 * `dim`, as compressed-tensors' pack_to_int32 lays them out after its +2^(bits-1) shift. Returns the bytes
 * of the I32 tensor [rows, ceil(cols*bits/32)] (dim 1) or [ceil(rows*bits/32), cols] (dim 0).
 */
export function packInt32(values: Uint8Array, rows: number, cols: number, bits: 4 | 8, dim: 0 | 1): Uint8Array {
  const perWord = 32 / bits;
  const wordsAlong = Math.ceil((dim === 1 ? cols : rows) / perWord);
  const out = new Uint8Array((dim === 1 ? rows * wordsAlong : wordsAlong * cols) * 4);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c]!;
      if (v >>> bits) throw new Error(`value ${v} at [${r}, ${c}] does not fit in ${bits} bits`);
      // Bit offset of the value within the little-endian byte stream of its word run.
      const bit = dim === 1 ? (r * wordsAlong * perWord + c) * bits : wordBit(r, c, cols, perWord, bits);
      out[bit >>> 3]! |= v << (bit & 7);
    }
  }
  return out;
}

/** Inverse of {@link packInt32}: the unsigned values [rows, cols] in little-endian packed I32 bytes. */
export function unpackInt32(bytes: Uint8Array, rows: number, cols: number, bits: 4 | 8, dim: 0 | 1): Uint8Array {
  const perWord = 32 / bits;
  const wordsAlong = Math.ceil((dim === 1 ? cols : rows) / perWord);
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const bit = dim === 1 ? (r * wordsAlong * perWord + c) * bits : wordBit(r, c, cols, perWord, bits);
      out[r * cols + c] = (bytes[bit >>> 3]! >>> (bit & 7)) & mask;
    }
  }
  return out;
}

// Packing along dim 0: word (floor(r / perWord), c) holds row r at slot r % perWord.
function wordBit(r: number, c: number, cols: number, perWord: number, bits: number): number {
  return (Math.floor(r / perWord) * cols + c) * 32 + (r % perWord) * bits;
}

/** The `quantization_config` object for one weight-only int scheme over all Linear layers. */
export function quantizationConfig(
  scheme: { bits: 4 | 8; symmetric: boolean; blockSize: number },
  ignore: string[],
  version?: string,
): Json {
  const weights = {
    num_bits: scheme.bits,
    type: 'int',
    symmetric: scheme.symmetric,
    strategy: 'group',
    group_size: scheme.blockSize,
    block_structure: null,
    dynamic: false,
    actorder: null,
    observer: 'minmax',
    observer_kwargs: {},
  };
  return {
    quant_method: 'compressed-tensors',
    format: PACK_QUANTIZED,
    quantization_status: 'compressed',
    config_groups: { group_0: { targets: ['Linear'], weights, input_activations: null, output_activations: null } },
    ignore: [...ignore],
    kv_cache_scheme: null,
    global_compression_ratio: null,
    ...(version === undefined ? {} : { version }),
  };
}

/**
 * Writes `outDir` as a compressed-tensors pack-quantized checkpoint: safetensors (sharded when large; one
 * tensor in memory at a time) plus config.json. Throws {@link InputError} naming the tensor when a layer
 * cannot be stored in a form vLLM loads.
 */
export async function writeCompressedTensorsCheckpoint(outDir: string, opts: CompressedTensorsWriteOptions): Promise<void> {
  const scheme = commonScheme(opts.layers);
  const entries: TensorEntry[] = [];
  const producers = new Map<string, () => Promise<Uint8Array> | Uint8Array>();
  // A quantized module's float name stays taken, so a stray float copy of its weight is caught too.
  const taken = new Set<string>();
  const claim = (name: string) => {
    if (taken.has(name)) throw new InputError(`tensor "${name}" would be written twice (a float tensor clashes with a quantized layer)`);
    taken.add(name);
  };
  const add = (name: string, dtype: DType, shape: number[], produce: () => Promise<Uint8Array> | Uint8Array) => {
    claim(name);
    entries.push({ name, dtype, shape });
    producers.set(name, produce);
  };
  const ignored = new Set(opts.ignore);
  for (const [module, q] of opts.layers) {
    if (ignored.has(module)) throw new InputError(`module "${module}" is both quantized and listed in ignore`);
    checkLayer(module, q);
    claim(`${module}.weight`);
    const perWord = 32 / q.bits;
    add(`${module}.weight_packed`, 'I32', [q.rows, q.cols / perWord], () => packInt32(q.codes, q.rows, q.cols, q.bits, 1));
    add(`${module}.weight_scale`, opts.scaleDtype, [q.rows, q.blocksPerRow], () => fromFloat32(q.scales, opts.scaleDtype));
    add(`${module}.weight_shape`, 'I64', [2], () => int64Bytes([q.rows, q.cols]));
    if (q.zeroPoints) {
      const zp = q.zeroPoints;
      add(`${module}.weight_zero_point`, 'I32', [Math.ceil(q.rows / perWord), q.blocksPerRow], () =>
        packInt32(zp, q.rows, q.blocksPerRow, q.bits, 0),
      );
    }
  }
  for (const t of opts.floatTensors) add(t.name, t.dtype, t.shape, () => opts.readFloat(t.name));
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  await writeShardedCheckpoint(outDir, entries, (name) => producers.get(name)!(), { maxShardBytes: opts.maxShardBytes ?? 5e9 });
  const config = { ...opts.sourceConfig, quantization_config: quantizationConfig(scheme, opts.ignore, opts.version) };
  await fs.writeFile(path.join(outDir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

// One config group covers every layer, so all layers must share bits, symmetry and group size.
function commonScheme(layers: Map<string, BlockQuantized>): { bits: 4 | 8; symmetric: boolean; blockSize: number } {
  const [first] = layers;
  if (!first) throw new InputError('no quantized layers to write as compressed-tensors');
  const [name0, q0] = first;
  for (const [name, q] of layers) {
    if (q.bits !== q0.bits || q.symmetric !== q0.symmetric || q.blockSize !== q0.blockSize) {
      const desc = (x: BlockQuantized) => `${x.bits}-bit ${x.symmetric ? 'symmetric' : 'asymmetric'} block ${x.blockSize}`;
      throw new InputError(
        `compressed-tensors export needs one scheme for all layers: "${name0}" is ${desc(q0)} but "${name}" is ${desc(q)}`,
      );
    }
  }
  if (q0.bits === 8 && !q0.symmetric) {
    throw new InputError(
      `"${name0}": vLLM has no kernel for asymmetric 8-bit weights (Marlin takes zero points with 4 bits only); ` +
        `quantize 8-bit symmetrically or use 4 bits`,
    );
  }
  return { bits: q0.bits, symmetric: q0.symmetric, blockSize: q0.blockSize };
}

function checkLayer(module: string, q: BlockQuantized): void {
  const tensor = `${module}.weight`;
  if (q.cols % q.blockSize !== 0) {
    const fits = [128, 64, 32, 16].filter((g) => q.cols % g === 0);
    const fix = fits.length
      ? `use a block size that divides it (${fits.join(', ')})`
      : 'no power-of-two block size from 16 to 128 divides it';
    throw new InputError(
      `tensor "${tensor}": in_features ${q.cols} is not a multiple of block size ${q.blockSize}, ` +
        `which compressed-tensors and vLLM require; ${fix}, or leave the module in float (ignore)`,
    );
  }
  if (q.cols % (32 / q.bits) !== 0) {
    throw new InputError(
      `tensor "${tensor}": in_features ${q.cols} is not a multiple of ${32 / q.bits}, ` +
        `so ${q.bits}-bit codes do not fill whole int32 words as vLLM requires; leave the module in float (ignore)`,
    );
  }
  // The rest are broken invariants of BlockQuantized, not user input.
  if (q.codes.length !== q.rows * q.cols || q.scales.length !== q.rows * q.blocksPerRow || q.blocksPerRow !== q.cols / q.blockSize) {
    throw new Error(`${tensor}: codes, scales or blocksPerRow disagree with [${q.rows}, ${q.cols}] block ${q.blockSize}`);
  }
  if (q.symmetric !== (q.zeroPoints === null) || (q.zeroPoints && q.zeroPoints.length !== q.rows * q.blocksPerRow)) {
    throw new Error(`${tensor}: zero points disagree with symmetric=${q.symmetric}`);
  }
}

function int64Bytes(values: number[]): Uint8Array {
  const view = new DataView(new ArrayBuffer(values.length * 8));
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return new Uint8Array(view.buffer);
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** One weight scheme declared by a config group. */
interface WeightScheme {
  bits: 4 | 8;
  symmetric: boolean;
  /** null for strategy "channel" (one group per row). */
  groupSize: number | null;
  format: string;
}

// Validates quantization_config and returns its weight schemes; refuses anything the reader cannot represent.
function parseSchemes(qc: Json, file: string): WeightScheme[] {
  const refuse = (what: string): never => {
    throw new InputError(`${file}: quantization_config ${what} is not supported (${SUPPORTED})`);
  };
  if (qc.quantization_status !== undefined && qc.quantization_status !== 'compressed')
    refuse(`quantization_status ${JSON.stringify(qc.quantization_status)}`);
  if (qc.kv_cache_scheme != null) refuse('kv_cache_scheme (KV-cache quantization)');
  const sparsity = qc.sparsity_config;
  if (isObject(sparsity) && Object.keys(sparsity).length > 0 && sparsity.format !== 'dense')
    refuse(`sparsity format ${JSON.stringify(sparsity.format)}`);
  const transform = qc.transform_config;
  if (isObject(transform) && Object.keys(transform).length > 0) refuse('transform_config (rotated weights)');
  const groups = qc.config_groups;
  if (!isObject(groups) || Object.keys(groups).length === 0) refuse('without config_groups');
  const schemes: WeightScheme[] = [];
  for (const [name, group] of Object.entries(groups as Json)) {
    if (!isObject(group)) refuse(`config group "${name}" that is not an object`);
    const g = group as Json;
    if (g.input_activations != null || g.output_activations != null) refuse(`config group "${name}" with activation quantization`);
    const format = g.format ?? qc.format;
    if (typeof format !== 'string' || !READABLE_FORMATS.includes(format))
      refuse(`format ${JSON.stringify(format)} in config group "${name}"`);
    const w = g.weights;
    if (!isObject(w)) refuse(`config group "${name}" without weights`);
    const args = w as Json;
    if ((args.type ?? 'int') !== 'int') refuse(`weight type ${JSON.stringify(args.type)} (e.g. fp8/fp4) in config group "${name}"`);
    if (args.num_bits !== 4 && args.num_bits !== 8) refuse(`num_bits ${JSON.stringify(args.num_bits)} in config group "${name}"`);
    if (args.dynamic === true || args.dynamic === 'local') refuse(`dynamic weights in config group "${name}"`);
    if (args.actorder === 'group' || args.actorder === 'dynamic' || args.actorder === true)
      refuse(`actorder "group" (weight_g_idx) in config group "${name}"`);
    const groupSize = args.group_size;
    const strategy = args.strategy ?? (typeof groupSize === 'number' && groupSize > 0 ? 'group' : groupSize === -1 ? 'channel' : 'tensor');
    if (strategy === 'group' && !(typeof groupSize === 'number' && Number.isInteger(groupSize) && groupSize > 0))
      refuse(`group strategy without a positive group_size in config group "${name}"`);
    if (strategy !== 'group' && strategy !== 'channel') refuse(`strategy ${JSON.stringify(strategy)} in config group "${name}"`);
    schemes.push({
      bits: args.num_bits as 4 | 8,
      symmetric: args.symmetric !== false,
      groupSize: strategy === 'group' ? (groupSize as number) : null,
      format: format as string,
    });
  }
  return schemes;
}

/** Where one quantized module's tensors are and how to decode them. */
interface QuantizedLayout {
  scheme: WeightScheme;
  rows: number;
  cols: number;
  groups: number;
  /** Name of the codes tensor: <m>.weight_packed, or the int8 <m>.weight of the unpacked formats. */
  codes: string;
  zeroPoint: TensorInfo | null;
  /** Zero points packed into I32 along dim 0 (pack-quantized) rather than stored one per int. */
  zeroPointPacked: boolean;
}

/** A compressed-tensors checkpoint seen as float weights: `<module>.weight` reads dequantized. */
export interface CompressedTensorsSource extends WeightSource {
  readonly dir: string;
  /** The parsed config.json. */
  readonly config: Json;
  /** Names of the quantized modules. */
  readonly quantizedModules: string[];
  /** Logical tensor names: float tensors as stored and `<module>.weight` for each quantized module. */
  names(): string[];
  /** The module's codes, scales and zero points in llmopt's unsigned convention. */
  readQuantized(module: string): Promise<BlockQuantized>;
  close(): Promise<void>;
}

const PARAM_SUFFIXES = ['weight_packed', 'weight_scale', 'weight_shape', 'weight_zero_point', 'weight_g_idx'];

/**
 * Opens `<dir>` (config.json plus safetensors) as a {@link CompressedTensorsSource}. Throws {@link InputError}
 * naming the file for schemes it cannot represent: activation or KV-cache quantization, fp8/fp4, 2:4 sparse
 * formats, transforms, activation-ordered groups.
 */
export async function openCompressedTensors(dir: string): Promise<CompressedTensorsSource> {
  const configPath = path.join(dir, 'config.json');
  const config = readJsonFile(configPath);
  if (!isCompressedTensors(config)) throw new InputError(`${configPath}: quantization_config.quant_method is not "compressed-tensors"`);
  const schemes = parseSchemes(config.quantization_config as Json, configPath);
  const ckpt = await Checkpoint.open(dir);
  try {
    const layouts = await discover(ckpt, schemes, configPath);
    return makeSource(dir, config, ckpt, layouts);
  } catch (error) {
    await ckpt.close();
    throw error;
  }
}

async function discover(ckpt: Checkpoint, schemes: WeightScheme[], configPath: string): Promise<Map<string, QuantizedLayout>> {
  const layouts = new Map<string, QuantizedLayout>();
  const packedFormats = schemes.some((s) => s.format === PACK_QUANTIZED);
  for (const name of ckpt.names()) {
    let module: string;
    let packed: boolean;
    if (packedFormats && name.endsWith('.weight_packed')) [module, packed] = [name.slice(0, -'.weight_packed'.length), true];
    else if (name.endsWith('.weight_scale') && ckpt.has(name.replace(/_scale$/, '')) && !ckpt.has(name.replace(/_scale$/, '_packed'))) {
      module = name.slice(0, -'.weight_scale'.length);
      if (!['I8', 'I16', 'I32'].includes(ckpt.info(`${module}.weight`).dtype)) continue; // a float layer with a stray scale
      packed = false;
    } else continue;
    layouts.set(module, await layoutOf(ckpt, module, packed, schemes, configPath));
  }
  return layouts;
}

async function layoutOf(
  ckpt: Checkpoint,
  module: string,
  packed: boolean,
  schemes: WeightScheme[],
  configPath: string,
): Promise<QuantizedLayout> {
  const need = (suffix: string): TensorInfo => {
    if (!ckpt.has(`${module}.${suffix}`)) throw new InputError(`${ckpt.dir}: quantized module "${module}" has no ${suffix} tensor`);
    return ckpt.info(`${module}.${suffix}`);
  };
  const bad = (info: TensorInfo, want: string): never => {
    throw new InputError(`${info.file}: tensor "${info.name}" is ${info.dtype} [${info.shape}], expected ${want}`);
  };
  if (ckpt.has(`${module}.weight_g_idx`))
    throw new InputError(
      `${ckpt.info(`${module}.weight_g_idx`).file}: tensor "${module}.weight_g_idx" (activation-ordered groups) ` +
        `is not supported (${SUPPORTED})`,
    );
  const codes = need(packed ? 'weight_packed' : 'weight');
  const scale = need('weight_scale');
  let rows: number, cols: number;
  if (packed) {
    const shape = need('weight_shape');
    if ((shape.dtype !== 'I64' && shape.dtype !== 'I32') || shape.shape.length !== 1 || shape.shape[0] !== 2) bad(shape, 'I64 [2]');
    const raw = new DataView((await ckpt.readRaw(shape.name)).buffer);
    [rows, cols] = [0, 1].map((i) => (shape.dtype === 'I64' ? Number(raw.getBigInt64(i * 8, true)) : raw.getInt32(i * 4, true))) as [
      number,
      number,
    ];
    if (!(rows > 0 && cols > 0)) bad(shape, 'positive [out, in] values');
  } else {
    if (codes.shape.length !== 2) bad(codes, 'a 2-D int tensor');
    [rows, cols] = codes.shape as [number, number];
  }
  if (!['F32', 'F16', 'BF16'].includes(scale.dtype) || scale.shape.length !== 2 || scale.shape[0] !== rows)
    bad(scale, `a float [${rows}, groups] tensor`);
  const groups = scale.shape[1]!;
  const zeroPoint = ckpt.has(`${module}.weight_zero_point`) ? ckpt.info(`${module}.weight_zero_point`) : null;
  const fits = schemes.filter(
    (s) =>
      (s.format === PACK_QUANTIZED) === packed &&
      s.symmetric === (zeroPoint === null) &&
      (s.groupSize === null ? 1 : Math.ceil(cols / s.groupSize)) === groups &&
      (!packed ||
        (codes.dtype === 'I32' &&
          codes.shape.length === 2 &&
          codes.shape[0] === rows &&
          codes.shape[1] === Math.ceil((cols * s.bits) / 32))),
  );
  const distinct = new Set(fits.map((s) => `${s.bits}/${s.groupSize ?? cols}`));
  if (distinct.size !== 1) {
    const why = distinct.size === 0 ? 'fits none of' : 'fits more than one of';
    throw new InputError(
      `${codes.file}: tensor "${codes.name}" ${codes.dtype} [${codes.shape}] with scale [${scale.shape}] ` +
        `${why} the weight schemes in ${configPath}`,
    );
  }
  const scheme = fits[0]!;
  // pack-quantized packs zero points into I32; older releases and the unpacked formats keep one int8 each.
  const zeroPointPacked = packed && zeroPoint?.dtype === 'I32';
  if (zeroPoint) {
    const want = zeroPointPacked ? [Math.ceil((rows * scheme.bits) / 32), groups] : [rows, groups];
    const intType = ['I8', 'I16', 'I32'].includes(zeroPoint.dtype);
    if (!intType || zeroPoint.shape.length !== 2 || zeroPoint.shape[0] !== want[0] || zeroPoint.shape[1] !== want[1]) {
      bad(zeroPoint, zeroPointPacked ? `I32 [${want}] (packed along out_features)` : `int [${want}]`);
    }
  }
  return { scheme, rows, cols, groups, codes: codes.name, zeroPoint, zeroPointPacked };
}

// Signed int tensors of the unpacked formats, shifted into unsigned codes with a range check.
function shiftSigned(raw: Uint8Array, info: TensorInfo, bits: number): Uint8Array {
  const values = toFloat32(raw, info.dtype);
  const half = 1 << (bits - 1);
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]! + half;
    if (!(v >= 0 && v < 2 * half))
      throw new InputError(`${info.file}: tensor "${info.name}" holds ${values[i]}, outside the signed ${bits}-bit range`);
    out[i] = v;
  }
  return out;
}

function makeSource(dir: string, config: Json, ckpt: Checkpoint, layouts: Map<string, QuantizedLayout>): CompressedTensorsSource {
  // Compression parameters disappear from the logical view; each module's codes tensor stands for its weight.
  const owned = new Set<string>();
  const moduleOfCodes = new Map<string, string>();
  for (const [module, l] of layouts) {
    for (const suffix of PARAM_SUFFIXES) owned.add(`${module}.${suffix}`);
    moduleOfCodes.set(l.codes, module);
  }
  const weightOf = new Map([...layouts].map(([module, l]) => [`${module}.weight`, l]));
  const names: string[] = [];
  for (const name of ckpt.names()) {
    const module = moduleOfCodes.get(name);
    if (module !== undefined) names.push(`${module}.weight`);
    else if (!owned.has(name)) names.push(name);
  }
  const known = new Set(names);

  const readQuantized = async (module: string): Promise<BlockQuantized> => {
    const l = layouts.get(module);
    if (!l) throw new InputError(`${dir}: no quantized module named "${module}"`);
    const { bits, groupSize } = l.scheme;
    const codesInfo = ckpt.info(l.codes);
    const raw = await ckpt.readRaw(l.codes);
    const codes = l.scheme.format === PACK_QUANTIZED ? unpackInt32(raw, l.rows, l.cols, bits, 1) : shiftSigned(raw, codesInfo, bits);
    let zeroPoints: Uint8Array | null = null;
    if (l.zeroPoint) {
      const zpRaw = await ckpt.readRaw(l.zeroPoint.name);
      zeroPoints = l.zeroPointPacked ? unpackInt32(zpRaw, l.rows, l.groups, bits, 0) : shiftSigned(zpRaw, l.zeroPoint, bits);
    }
    const scales = await ckpt.readFloat32(`${module}.weight_scale`);
    return {
      bits,
      blockSize: groupSize ?? l.cols,
      symmetric: l.scheme.symmetric,
      rows: l.rows,
      cols: l.cols,
      blocksPerRow: l.groups,
      codes,
      scales,
      zeroPoints,
    };
  };

  return {
    dir,
    config,
    quantizedModules: [...layouts.keys()],
    names: () => [...names],
    has: (name) => known.has(name),
    shape: (name) => {
      const l = weightOf.get(name);
      if (l) return [l.rows, l.cols];
      if (!known.has(name)) throw new InputError(`checkpoint ${dir} has no tensor named "${name}"`);
      return [...ckpt.info(name).shape];
    },
    readFloat32: async (name) => {
      if (weightOf.has(name)) return dequantize(await readQuantized(name.slice(0, -'.weight'.length)));
      if (!known.has(name)) throw new InputError(`checkpoint ${dir} has no tensor named "${name}"`);
      return ckpt.readFloat32(name);
    },
    readQuantized,
    close: () => ckpt.close(),
  };
}
