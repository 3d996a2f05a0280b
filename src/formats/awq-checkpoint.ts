// Hugging Face checkpoints in AWQ's GEMM layout (`quant_method: awq`, version "gemm") as AutoAWQ writes them and
// vLLM and transformers load them: written from 4-bit BlockQuantized layers, and read back as dequantized weights.

/*
 * The layout (AutoAWQ awq/modules/linear/gemm.py WQLinear_GEMM.from_linear; vLLM model_executor/layers/quantization/
 * awq.py create_weights and awq_marlin.py; transformers integrations/awq.py), per Linear `<m>` with weight [out, in]:
 *   <m>.qweight I32 [in, out / 8]: the codes transposed to [in, out]; word j of a row holds output columns
 *               8j .. 8j+7 interleaved, column 8j + AWQ_ORDER[k] at bits [4k, 4k + 4), AWQ_ORDER = [0, 2, 4, 6, 1, 3,
 *               5, 7] (AutoAWQ's order_map; vLLM unpacks with the inverse, AWQ_REVERSE_ORDER [0, 4, 1, 5, 2, 6, 3, 7]).
 *   <m>.qzeros  I32 [groups, out / 8]: unsigned zero points, packed the same way (no offset, unlike GPTQ v1).
 *   <m>.scales  F16 [groups, out].
 * Dequantization is w[o, i] = (q[i, o] - zero[g, o]) * scale[g, o], g = i // group_size. AWQ kernels always subtract
 * the zero points, so a symmetric layer is stored with zero 8 and zero_point: true. 4 bits only (AutoAWQ's GEMM).
 * quantization_config = { quant_method: "awq", bits, group_size, zero_point: true, version: "gemm",
 * modules_to_not_convert } (transformers AwqConfig; vLLM AWQConfig.from_config reads w_bit/bits,
 * q_group_size/group_size, zero_point, modules_to_not_convert and skips a layer whose name contains one of them).
 */

import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../core/errors.js';
import type { BlockQuantized } from '../core/block-quant.js';
import { fromFloat32, toFloat32 } from './dtype.js';
import { checkPackedLayers, zeroPointsOf, type PackedWriteOptions } from './gptq-checkpoint.js';
import { readJsonFile } from './hf-config.js';
import { hfConfigJson, PT_METADATA } from './hf-config-json.js';
import { quantizedSource, transpose, type QuantizedCheckpointSource } from './quantized-source.js';
import { Checkpoint, writeShardedCheckpoint, type TensorEntry, type TensorInfo } from './safetensors.js';

type Json = Record<string, unknown>;
const SUFFIXES = ['qweight', 'qzeros', 'scales'] as const;

/** AutoAWQ's interleaving: slot k of a word holds column 8j + AWQ_ORDER[k]. */
export const AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7] as const;

/** Packs a [rows, cols] matrix of 4-bit values into I32 [rows, cols / 8] words in AWQ's interleaved order. */
export function packAwq(values: Uint8Array, rows: number, cols: number): Uint8Array {
  const words = cols / 8;
  const out = new Uint8Array(rows * words * 4);
  const view = new DataView(out.buffer);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < words; j++) {
      let word = 0;
      for (let k = 0; k < 8; k++) word |= (values[r * cols + 8 * j + AWQ_ORDER[k]!]! & 15) << (4 * k);
      view.setInt32((r * words + j) * 4, word, true);
    }
  }
  return out;
}

/** Inverse of {@link packAwq}. */
export function unpackAwq(bytes: Uint8Array, rows: number, cols: number): Uint8Array {
  const words = cols / 8;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < words; j++) {
      const word = view.getInt32((r * words + j) * 4, true);
      for (let k = 0; k < 8; k++) out[r * cols + 8 * j + AWQ_ORDER[k]!] = (word >>> (4 * k)) & 15;
    }
  }
  return out;
}

/** Whether a config.json object declares an AWQ checkpoint. */
export function isAwq(config: Json): boolean {
  const qc = config.quantization_config;
  return typeof qc === 'object' && qc !== null && (qc as Json).quant_method === 'awq';
}

/** Writes `outDir` as an AWQ GEMM checkpoint: safetensors and config.json. */
export async function writeAwqCheckpoint(outDir: string, opts: PackedWriteOptions): Promise<void> {
  const scheme = checkPackedLayers(opts.layers, 'awq');
  if (scheme.bits !== 4) throw new InputError(`--format awq stores 4-bit weights only (AutoAWQ's GEMM layout), not ${scheme.bits}-bit`);
  const entries: TensorEntry[] = [];
  const producers = new Map<string, () => Promise<Uint8Array> | Uint8Array>();
  const add = (name: string, dtype: TensorEntry['dtype'], shape: number[], produce: () => Promise<Uint8Array> | Uint8Array) => {
    if (producers.has(name)) throw new InputError(`tensor "${name}" would be written twice`);
    entries.push({ name, dtype, shape });
    producers.set(name, produce);
  };
  for (const [m, q] of opts.layers) {
    const groups = q.blocksPerRow;
    add(`${m}.qweight`, 'I32', [q.cols, q.rows / 8], () =>
      packAwq(
        transpose(q.codes, q.rows, q.cols, (n) => new Uint8Array(n)),
        q.cols,
        q.rows,
      ),
    );
    add(`${m}.qzeros`, 'I32', [groups, q.rows / 8], () =>
      packAwq(
        transpose(zeroPointsOf(q), q.rows, groups, (n) => new Uint8Array(n)),
        groups,
        q.rows,
      ),
    );
    add(`${m}.scales`, 'F16', [groups, q.rows], () =>
      fromFloat32(
        transpose(q.scales, q.rows, groups, (n) => new Float32Array(n)),
        'F16',
      ),
    );
  }
  for (const t of opts.floatTensors) add(t.name, t.dtype, t.shape, () => opts.readFloat(t.name));
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  await writeShardedCheckpoint(outDir, entries, (name) => producers.get(name)!(), {
    maxShardBytes: opts.maxShardBytes ?? 5e9,
    metadata: { ...PT_METADATA },
  });
  const skipped = opts.skipped.flat();
  const qc = {
    quant_method: 'awq',
    bits: 4,
    group_size: scheme.blockSize,
    zero_point: true,
    version: 'gemm',
    modules_to_not_convert: skipped.length > 0 ? skipped : null,
  };
  await fs.writeFile(path.join(outDir, 'config.json'), hfConfigJson({ ...opts.sourceConfig, quantization_config: qc }));
}

/** Opens an AWQ GEMM checkpoint as dequantized weights; refuses other versions (gemv, marlin) and bit widths. */
export async function openAwq(dir: string): Promise<QuantizedCheckpointSource> {
  const configPath = path.join(dir, 'config.json');
  const config = readJsonFile(configPath);
  const qc = config.quantization_config as Json;
  const refuse = (what: string): never => {
    throw new InputError(`${configPath}: quantization_config ${what} is not supported (supported: AWQ 4-bit, version gemm)`);
  };
  if (!isAwq(config)) refuse(`quant_method ${JSON.stringify(qc?.quant_method)}`);
  const bits = qc.bits ?? qc.w_bit;
  if (bits !== 4) refuse(`bits ${JSON.stringify(bits)}`);
  const version = String(qc.version ?? 'gemm').toLowerCase();
  if (version !== 'gemm') refuse(`version ${JSON.stringify(qc.version)}`);
  const groupSize = qc.group_size ?? qc.q_group_size;
  if (typeof groupSize !== 'number' || !Number.isInteger(groupSize) || groupSize < 1) refuse(`group_size ${JSON.stringify(groupSize)}`);
  const g = groupSize as number;
  const ckpt = await Checkpoint.open(dir);
  try {
    const modules = new Map<string, { rows: number; cols: number; bits: 4 | 8 }>();
    for (const name of ckpt.names()) {
      if (!name.endsWith('.qweight')) continue;
      const m = name.slice(0, -'.qweight'.length);
      const need = (s: string): TensorInfo => {
        if (!ckpt.has(`${m}.${s}`)) throw new InputError(`${dir}: quantized module "${m}" has no ${s} tensor`);
        return ckpt.info(`${m}.${s}`);
      };
      const [qweight, scales, qzeros] = [need('qweight'), need('scales'), need('qzeros')];
      const cols = qweight.shape[0]!;
      const rows = qweight.shape[1]! * 8;
      const groups = Math.ceil(cols / g);
      const bad = (t: TensorInfo, want: string) =>
        new InputError(`${t.file}: tensor "${t.name}" is ${t.dtype} [${t.shape}], expected ${want}`);
      if (qweight.dtype !== 'I32' || qweight.shape.length !== 2) throw bad(qweight, 'I32 [in, out / 8]');
      if (!['F16', 'BF16', 'F32'].includes(scales.dtype) || scales.shape.join() !== `${groups},${rows}`)
        throw bad(scales, `float [${groups}, ${rows}]`);
      if (qzeros.dtype !== 'I32' || qzeros.shape.join() !== `${groups},${rows / 8}`) throw bad(qzeros, `I32 [${groups}, ${rows / 8}]`);
      modules.set(m, { rows, cols, bits: 4 });
    }
    const decode = async (m: string): Promise<BlockQuantized> => {
      const { rows, cols } = modules.get(m)!;
      const groups = Math.ceil(cols / g);
      const codes = transpose(unpackAwq(await ckpt.readRaw(`${m}.qweight`), cols, rows), cols, rows, (n) => new Uint8Array(n));
      const zeros = transpose(unpackAwq(await ckpt.readRaw(`${m}.qzeros`), groups, rows), groups, rows, (n) => new Uint8Array(n));
      const info = ckpt.info(`${m}.scales`);
      const scales = transpose(toFloat32(await ckpt.readRaw(`${m}.scales`), info.dtype), groups, rows, (n) => new Float32Array(n));
      const implicit = zeros.every((z) => z === 8);
      return {
        bits: 4,
        blockSize: g,
        symmetric: implicit,
        rows,
        cols,
        blocksPerRow: groups,
        codes,
        scales,
        zeroPoints: implicit ? null : zeros,
      };
    };
    return quantizedSource(dir, config, ckpt, modules, SUFFIXES, decode);
  } catch (error) {
    await ckpt.close();
    throw error;
  }
}
