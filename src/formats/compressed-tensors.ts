// Hugging Face checkpoints in the compressed-tensors layout that vLLM serves for weight-only int4/int8
// quantization, written from BlockQuantized layers (compressed-tensors-read.ts reads them back).

/*
 * The layout, as llm-compressor writes it and vLLM loads it. Sources: compressed-tensors
 * compressors/quantized_compressors/pack_quantized.py, compressors/pack_quantized/helpers.py (pack_to_int32),
 * compressors/model_compressors/model_compressor.py (update_config), quantization/lifecycle/forward.py;
 * llm-compressor transformers/compression/quantization_format.py; vLLM
 * compressed_tensors/schemes/compressed_tensors_wNa16.py and utils/marlin_utils.py.
 *
 * config.json gains `quantization_config` = { quant_method: "compressed-tensors", format: "pack-quantized",
 * quantization_status: "compressed", config_groups: { group_0: { targets: ["Linear"], format: "pack-quantized",
 * weights: { num_bits, type: "int", symmetric, strategy: "group", group_size, dynamic: false, actorder: null, ... },
 * input_activations: null, output_activations: null } }, ignore: ["lm_head", ...], kv_cache_scheme: null,
 * sparsity_config: {}, transform_config: {}, version }. Layers of several schemes (--mix) get one group each,
 * targeting the exact module names (quantizationConfig says why not "Linear"). Recent llm-compressor releases
 * write the format per group too (compressed-tensors quantization/quant_scheme.py QuantizationScheme.format, model_compressor.py
 * update_config) and the library's version; vLLM's parser reads the group's format first, the top-level one else
 * (compressed_tensors.py, _quantization_scheme_map_from_config). `lm_head` is always in `ignore`, tied or not:
 * transformers' compressed-tensors loader would otherwise target it as a Linear.
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
 * Symmetric codes span -2^(bits-1)..2^(bits-1)-1 as compressed-tensors' quantizer makes them (the quantize pass
 * asks the grid for it: passes/quantize/blockwise.ts, QuantGrid.fullRange). Every safetensors file carries
 * {"format": "pt"} metadata, as torch's save_file writes it.
 *
 * Divisibility: compressed-tensors' quantize refuses in % group_size != 0 (when in >= group_size), and vLLM
 * sizes weight_packed as in // pack_factor and weight_scale as in // group_size, so the writer requires both.
 * vLLM's Marlin kernels support zero points with 4 bits only, so asymmetric 8-bit is refused too.
 */

import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../core/errors.js';
import type { BlockQuantized } from '../core/block-quant.js';
import { fromFloat32, type DType } from './dtype.js';
import { hfConfigJson, PT_METADATA } from './hf-config-json.js';
import { packInt32 } from './int32-pack.js';
import { writeShardedCheckpoint, type TensorEntry } from './safetensors.js';

export { packInt32, unpackInt32 } from './int32-pack.js';

type Json = Record<string, unknown>;

/** The only format the writer produces; the reader also takes the unpacked int formats. */
export const PACK_QUANTIZED = 'pack-quantized';
/**
 * quantization_config.version: the compressed-tensors release whose layout and keys the writer follows (vLLM and
 * transformers do not read it; llm-compressor records the installed library's version there).
 */
export const COMPRESSED_TENSORS_VERSION = '0.12.2';

/** Options of {@link writeCompressedTensorsCheckpoint}. */
export interface CompressedTensorsWriteOptions {
  /** The source model's config.json; copied with `quantization_config` set. */
  sourceConfig: Json;
  /** Quantized Linear modules by module name (e.g. model.layers.0.self_attn.q_proj); one config group per scheme. */
  layers: Map<string, BlockQuantized>;
  /** dtype of the stored scales; llm-compressor stores them in the weights' dtype. */
  scaleDtype: 'F32' | 'F16' | 'BF16';
  /** Unquantized tensors, copied through unchanged. */
  floatTensors: TensorEntry[];
  /** Raw bytes of one of `floatTensors`. */
  readFloat: (name: string) => Promise<Uint8Array>;
  /** Linear modules deliberately left in float, listed in quantization_config.ignore (lm_head is always added). */
  ignore: string[];
  /** Largest shard; defaults to 5 GB like Hugging Face. */
  maxShardBytes?: number;
}

/** Whether a config.json object declares a compressed-tensors checkpoint. */
export function isCompressedTensors(config: Json): boolean {
  const qc = config.quantization_config;
  return typeof qc === 'object' && qc !== null && (qc as Json).quant_method === 'compressed-tensors';
}

/** One weight-only int scheme of a checkpoint. */
export interface WeightScheme {
  bits: 4 | 8;
  symmetric: boolean;
  blockSize: number;
}

/** A config group: its scheme and the modules it covers (null: every Linear not ignored, the one-scheme case). */
export interface SchemeGroup {
  scheme: WeightScheme;
  modules: string[] | null;
}

/**
 * The `quantization_config` object: one config group per scheme; lm_head is ignored. One scheme targets the class
 * "Linear" as llm-compressor writes it; several (--mix) list each group's modules by exact name. vLLM matches a
 * layer's name against every group's targets before it tries class names (compressed_tensors/utils.py
 * find_matched_target), and a fused qkv_proj / gate_up_proj matches only by its shards' names (its class,
 * QKVParallelLinear, contains "Linear" and would take that group whatever its shards' names say), so with
 * several groups no group may target "Linear".
 */
export function quantizationConfig(groups: SchemeGroup[], ignore: string[]): Json {
  const configGroups: Json = {};
  groups.forEach(({ scheme, modules }, i) => {
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
    const targets = modules ?? ['Linear'];
    configGroups[`group_${i}`] = { targets, weights, input_activations: null, output_activations: null, format: PACK_QUANTIZED };
  });
  return {
    quant_method: 'compressed-tensors',
    format: PACK_QUANTIZED,
    quantization_status: 'compressed',
    config_groups: configGroups,
    ignore: ['lm_head', ...ignore.filter((m) => m !== 'lm_head')],
    kv_cache_scheme: null,
    global_compression_ratio: null,
    sparsity_config: {},
    transform_config: {},
    version: COMPRESSED_TENSORS_VERSION,
  };
}

/**
 * Writes `outDir` as a compressed-tensors pack-quantized checkpoint: safetensors (sharded when large; one
 * tensor in memory at a time) plus config.json. Throws {@link InputError} naming the tensor when a layer
 * cannot be stored in a form vLLM loads.
 */
export async function writeCompressedTensorsCheckpoint(outDir: string, opts: CompressedTensorsWriteOptions): Promise<void> {
  const groups = schemeGroups(opts.layers);
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
    if (ignored.has(module) || module === 'lm_head') throw new InputError(`module "${module}" is both quantized and listed in ignore`);
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
  await writeShardedCheckpoint(outDir, entries, (name) => producers.get(name)!(), {
    maxShardBytes: opts.maxShardBytes ?? 5e9,
    metadata: { ...PT_METADATA },
  });
  const config = { ...opts.sourceConfig, quantization_config: quantizationConfig(groups, opts.ignore) };
  await fs.writeFile(path.join(outDir, 'config.json'), hfConfigJson(config));
}

// One config group per scheme, in order of first appearance; one scheme targets every Linear.
function schemeGroups(layers: Map<string, BlockQuantized>): SchemeGroup[] {
  if (layers.size === 0) throw new InputError('no quantized layers to write as compressed-tensors');
  const byKey = new Map<string, { scheme: WeightScheme; modules: string[] }>();
  for (const [name, q] of layers) {
    if (q.bits === 8 && !q.symmetric) {
      throw new InputError(
        `"${name}": vLLM has no kernel for asymmetric 8-bit weights (Marlin takes zero points with 4 bits only); ` +
          `quantize 8-bit symmetrically or use 4 bits`,
      );
    }
    const key = `${q.bits}/${q.symmetric}/${q.blockSize}`;
    const group = byKey.get(key) ?? { scheme: { bits: q.bits, symmetric: q.symmetric, blockSize: q.blockSize }, modules: [] };
    group.modules.push(name);
    byKey.set(key, group);
  }
  const groups = [...byKey.values()];
  return groups.length === 1 ? [{ scheme: groups[0]!.scheme, modules: null }] : groups;
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
