// Reads a compressed-tensors checkpoint (llmopt's own quantize output, or llm-compressor's weight-only int4/int8 ones)
// as a WeightSource of dequantized weights; refuses the schemes it cannot represent, naming the file.
import * as path from 'node:path';
import { InputError } from '../core/errors.js';
import { dequantize, type BlockQuantized } from '../core/block-quant.js';
import { toFloat32 } from './dtype.js';
import { readJsonFile } from './hf-config.js';
import { isCompressedTensors, PACK_QUANTIZED } from './compressed-tensors.js';
import { unpackInt32 } from './int32-pack.js';
import type { QuantizedCheckpointSource } from './quantized-source.js';
import { Checkpoint, type TensorInfo } from './safetensors.js';

type Json = Record<string, unknown>;

const READABLE_FORMATS = [PACK_QUANTIZED, 'int-quantized', 'naive-quantized'];
const SUPPORTED =
  'supported: weight-only int4/int8 with strategy group or channel, format pack-quantized, int-quantized or naive-quantized';

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
export type CompressedTensorsSource = QuantizedCheckpointSource;

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
    bitsOf: (module) => {
      const l = layouts.get(module);
      if (!l) throw new InputError(`${dir}: no quantized module named "${module}"`);
      return l.scheme.bits;
    },
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
