// Hugging Face checkpoints in GPTQ's layout (`quant_method: gptq`) as GPTQModel and AutoGPTQ write them and vLLM,
// transformers and GPTQModel load them: written from BlockQuantized layers, and read back as dequantized weights.

/*
 * The layout (GPTQModel nn_modules/qlinear/__init__.py PackableQuantLinear.pack, AutoGPTQ nn_modules/qlinear/
 * qlinear_cuda_old.py pack; vLLM model_executor/layers/quantization/gptq.py create_weights), per Linear `<m>`
 * with weight [out, in], pack factor pf = 32 / bits:
 *   <m>.qweight I32 [in / pf, out]: the codes transposed to [in, out] and packed along dim 0, input row i of a
 *               word at bits [(i % pf) * bits, ...), lowest first.
 *   <m>.qzeros  I32 [groups, out / pf]: zero points transposed to [groups, out], packed along dim 1, each stored
 *               minus 1: the v1 checkpoint format ("checkpoint_format": "gptq") that every loader reads; its
 *               kernels add the 1 back (vLLM exllama.py documents it). GPTQModel's in-memory v2 keeps them as is.
 *   <m>.scales  F16 [groups, out].
 *   <m>.g_idx   I32 [in]: the group of each input row, i // group_size (contiguous groups: desc_act false).
 * Dequantization is w[o, i] = (q[i, o] - (zero[g, o] + 1)) * scale[g, o] with g = g_idx[i]. Symmetric layers store
 * zero 2^(bits-1) (so qzeros holds 2^(bits-1) - 1 in every slot), as GPTQ's sym quantizer sets it.
 * config.json's quantization_config (and quantize_config.json, which AutoGPTQ reads) carries bits, group_size,
 * desc_act, sym, quant_method, checkpoint_format; modules left in float are named in `dynamic` as "-:" negative
 * regexes, which vLLM's gptq / gptq_marlin (utils/gptq_utils.py get_dynamic_override) and GPTQModel skip. Modules of
 * another width (--mix: int8 beside int4) are named in "+:" positive rules with their `bits`, GPTQModel's per-module
 * override, which vLLM applies to the layer it builds (gptq_utils.py override_config: bits, group_size, desc_act, sym
 * under gptq_marlin; the first rule whose regex re.match-es the prefix wins). The base `bits` is the narrowest width.
 */

import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../core/errors.js';
import type { BlockQuantized } from '../core/block-quant.js';
import { fromFloat32, toFloat32 } from './dtype.js';
import { readJsonFile } from './hf-config.js';
import { hfConfigJson, PT_METADATA } from './hf-config-json.js';
import { packInt32, unpackInt32 } from './int32-pack.js';
import { int32Values, quantizedSource, transpose, type QuantizedCheckpointSource } from './quantized-source.js';
import { Checkpoint, writeShardedCheckpoint, type TensorEntry, type TensorInfo } from './safetensors.js';

type Json = Record<string, unknown>;
const SUFFIXES = ['qweight', 'qzeros', 'scales', 'g_idx'] as const;

/** Options of {@link writeGptqCheckpoint} (and of the AWQ writer). */
export interface PackedWriteOptions {
  sourceConfig: Json;
  /** Quantized Linear modules by name; all share one scheme. */
  layers: Map<string, BlockQuantized>;
  /** Unquantized tensors, copied through unchanged (biases of quantized modules among them). */
  floatTensors: TensorEntry[];
  readFloat: (name: string) => Promise<Uint8Array>;
  /** Linear modules left in float, each with the other names a loader may know it by (vLLM's fused module). */
  skipped: string[][];
  /**
   * GPTQ only: the quantized modules at a width other than the narrowest, grouped as `skipped` is (stored names and
   * vLLM's fused one), each group at one width. AWQ refuses layers of several widths.
   */
  raised?: string[][];
  maxShardBytes?: number;
}

/** Whether a config.json object declares a GPTQ checkpoint. */
export function isGptq(config: Json): boolean {
  const qc = config.quantization_config;
  return typeof qc === 'object' && qc !== null && (qc as Json).quant_method === 'gptq';
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The `dynamic` key naming exactly `names` (vLLM and GPTQModel re.match it against a module's name). */
const dynamicKey = (sign: '+' | '-', names: string[]) => `${sign}:^(?:${names.map(escapeRegex).join('|')})$`;

/**
 * The quantization_config GPTQModel writes for a base scheme; float modules as `dynamic` negative matches, modules
 * of another width as positive ones carrying their `bits`.
 */
export function gptqConfig(
  scheme: { bits: 4 | 8; blockSize: number; symmetric: boolean },
  skipped: string[][],
  raised: Array<{ names: string[]; bits: 4 | 8 }> = [],
): Json {
  const dynamic: Json = {};
  for (const names of skipped) dynamic[dynamicKey('-', names)] = {};
  for (const r of raised) dynamic[dynamicKey('+', r.names)] = { bits: r.bits };
  return {
    quant_method: 'gptq',
    checkpoint_format: 'gptq',
    bits: scheme.bits,
    group_size: scheme.blockSize,
    desc_act: false,
    sym: scheme.symmetric,
    lm_head: false,
    static_groups: false,
    true_sequential: true,
    damp_percent: 0.01,
    pack_dtype: 'int32',
    ...(skipped.length + raised.length > 0 ? { dynamic } : {}),
  };
}

/**
 * One scheme for every layer, bits aside where `widths` (GPTQ's `dynamic`); shapes GPTQ's packing and vLLM's loader
 * accept. Returns the base layer (the narrowest). Throws InputError naming the tensor.
 */
export function checkPackedLayers(layers: Map<string, BlockQuantized>, format: string, widths = false): BlockQuantized {
  const all = [...layers.values()];
  if (all.length === 0) throw new InputError(`no quantized layers to write as ${format}`);
  const first = all.reduce((a, q) => (q.bits < a.bits ? q : a));
  for (const [module, q] of layers) {
    const pf = 32 / q.bits;
    if ((q.bits !== first.bits && !widths) || q.symmetric !== first.symmetric || q.blockSize !== first.blockSize)
      throw new InputError(`--format ${format} needs one scheme for all layers: "${module}" differs`);
    if (q.cols % q.blockSize !== 0 || q.cols % pf !== 0 || q.rows % pf !== 0)
      throw new InputError(
        `tensor "${module}.weight" [${q.rows}, ${q.cols}]: --format ${format} needs in_features a multiple of the block size ` +
          `${q.blockSize} and of ${pf}, and out_features a multiple of ${pf}; leave the module in float (--exclude)`,
      );
  }
  return first;
}

/** The stored [groups, out] zero points of a layer (2^(bits-1) when symmetric). */
export function zeroPointsOf(q: BlockQuantized): Uint8Array {
  return q.zeroPoints ?? new Uint8Array(q.rows * q.blocksPerRow).fill(1 << (q.bits - 1));
}

/** Writes `outDir` as a GPTQ checkpoint: safetensors, config.json and quantize_config.json. */
export async function writeGptqCheckpoint(outDir: string, opts: PackedWriteOptions): Promise<void> {
  const scheme = checkPackedLayers(opts.layers, 'gptq', true);
  const raised = raisedRules(opts, scheme.bits);
  const entries: TensorEntry[] = [];
  const producers = new Map<string, () => Promise<Uint8Array> | Uint8Array>();
  const add = (name: string, dtype: TensorEntry['dtype'], shape: number[], produce: () => Promise<Uint8Array> | Uint8Array) => {
    if (producers.has(name)) throw new InputError(`tensor "${name}" would be written twice`);
    entries.push({ name, dtype, shape });
    producers.set(name, produce);
  };
  for (const [m, q] of opts.layers) {
    const pf = 32 / q.bits;
    const groups = q.blocksPerRow;
    add(`${m}.qweight`, 'I32', [q.cols / pf, q.rows], () =>
      packInt32(
        transpose(q.codes, q.rows, q.cols, (n) => new Uint8Array(n)),
        q.cols,
        q.rows,
        q.bits,
        0,
      ),
    );
    add(`${m}.qzeros`, 'I32', [groups, q.rows / pf], () => {
      const zeros = transpose(zeroPointsOf(q), q.rows, groups, (n) => new Uint8Array(n));
      for (let i = 0; i < zeros.length; i++) {
        if (zeros[i] === 0) throw new Error(`${m}: zero point 0 has no GPTQ v1 encoding (the quantizer's minZero is 1)`);
        zeros[i]! -= 1;
      }
      return packInt32(zeros, groups, q.rows, q.bits, 1);
    });
    add(`${m}.scales`, 'F16', [groups, q.rows], () =>
      fromFloat32(
        transpose(q.scales, q.rows, groups, (n) => new Float32Array(n)),
        'F16',
      ),
    );
    add(`${m}.g_idx`, 'I32', [q.cols], () => {
      const out = new Uint8Array(q.cols * 4);
      const view = new DataView(out.buffer);
      for (let i = 0; i < q.cols; i++) view.setInt32(i * 4, Math.floor(i / q.blockSize), true);
      return out;
    });
  }
  for (const t of opts.floatTensors) add(t.name, t.dtype, t.shape, () => opts.readFloat(t.name));
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  await writeShardedCheckpoint(outDir, entries, (name) => producers.get(name)!(), {
    maxShardBytes: opts.maxShardBytes ?? 5e9,
    metadata: { ...PT_METADATA },
  });
  const qc = gptqConfig(scheme, opts.skipped, raised);
  await fs.writeFile(path.join(outDir, 'config.json'), hfConfigJson({ ...opts.sourceConfig, quantization_config: qc }));
  await fs.writeFile(path.join(outDir, 'quantize_config.json'), hfConfigJson(qc));
}

// The positive `dynamic` rules of the layers wider than the base: each group of names at one width, every wider
// layer in a group (else vLLM would build it at the base width and fail on its shapes).
function raisedRules(opts: PackedWriteOptions, base: number): Array<{ names: string[]; bits: 4 | 8 }> {
  const rules: Array<{ names: string[]; bits: 4 | 8 }> = [];
  const covered = new Set<string>();
  for (const names of opts.raised ?? []) {
    const widths = new Set(names.filter((n) => opts.layers.has(n)).map((n) => opts.layers.get(n)!.bits));
    if (widths.size !== 1) throw new Error(`--mix group ${names.join(', ')}: its stored layers have ${widths.size} widths, not 1`);
    const [bits] = widths as Set<4 | 8>;
    if (bits === base) continue;
    rules.push({ names, bits: bits! });
    for (const n of names) covered.add(n);
  }
  const stray = [...opts.layers].find(([m, q]) => q.bits !== base && !covered.has(m));
  if (stray) throw new Error(`${stray[0]}: ${stray[1].bits}-bit beside ${base}-bit layers with no dynamic rule naming it`);
  return rules;
}

/** The override `dynamic` gives a module, as vLLM's get_dynamic_override reads it: false (float), a rule, or null. */
export function dynamicRule(dynamic: unknown, module: string, file: string): Json | false | null {
  if (dynamic == null) return null;
  if (typeof dynamic !== 'object' || Array.isArray(dynamic)) throw new InputError(`${file}: quantization_config.dynamic is not an object`);
  for (const [pattern, rule] of Object.entries(dynamic as Json)) {
    const negative = pattern.startsWith('-:');
    const source = pattern.replace(/^[+-]:/, '');
    let re: RegExp;
    try {
      // Python's re.match: anchored at the start only.
      re = new RegExp(`^(?:${source})`);
    } catch {
      throw new InputError(`${file}: quantization_config.dynamic rule ${JSON.stringify(pattern)} is not a regex llmopt can read`);
    }
    if (!re.test(module)) continue;
    if (negative) return false;
    if (typeof rule !== 'object' || rule === null)
      throw new InputError(`${file}: dynamic rule ${JSON.stringify(pattern)} is not an object`);
    return rule as Json;
  }
  return null;
}

/**
 * Opens a GPTQ checkpoint (v1 "gptq" or "gptq_v2" zero points) as dequantized weights. Refuses what BlockQuantized
 * cannot hold: activation-ordered groups (a g_idx other than i // group_size), bits other than 4 and 8.
 */
export async function openGptq(dir: string): Promise<QuantizedCheckpointSource> {
  const configPath = path.join(dir, 'config.json');
  const config = readJsonFile(configPath);
  const qc = config.quantization_config as Json;
  const refuse = (what: string): never => {
    throw new InputError(`${configPath}: quantization_config ${what} is not supported (supported: GPTQ 4/8-bit, contiguous groups)`);
  };
  if (!isGptq(config)) refuse(`quant_method ${JSON.stringify(qc?.quant_method)}`);
  const bits = qc.bits;
  if (bits !== 4 && bits !== 8) refuse(`bits ${JSON.stringify(bits)}`);
  const format = qc.checkpoint_format ?? 'gptq';
  if (format !== 'gptq' && format !== 'gptq_v2') refuse(`checkpoint_format ${JSON.stringify(format)}`);
  const groupSize = qc.group_size;
  if (typeof groupSize !== 'number' || !Number.isInteger(groupSize) || (groupSize < 1 && groupSize !== -1))
    refuse(`group_size ${JSON.stringify(groupSize)}`);
  const offset = format === 'gptq' ? 1 : 0;
  // Each module's scheme: the base one with its `dynamic` rule's bits, group_size and sym over it.
  const schemeOf = (m: string) => {
    const rule = dynamicRule(qc.dynamic, m, configPath);
    if (rule === false)
      throw new InputError(`${configPath}: module "${m}" has a qweight but quantization_config.dynamic keeps it in float`);
    const b = rule?.bits ?? bits;
    const g = rule?.group_size ?? groupSize;
    if (b !== 4 && b !== 8) refuse(`dynamic bits ${JSON.stringify(b)} for "${m}"`);
    if (typeof g !== 'number' || !Number.isInteger(g) || (g < 1 && g !== -1)) refuse(`dynamic group_size ${JSON.stringify(g)} for "${m}"`);
    return { bits: b as 4 | 8, groupSize: g as number, symmetric: (rule?.sym ?? qc.sym) !== false };
  };
  const ckpt = await Checkpoint.open(dir);
  try {
    const modules = new Map<string, { rows: number; cols: number; bits: 4 | 8; groupSize: number; symmetric: boolean }>();
    for (const name of ckpt.names()) {
      if (!name.endsWith('.qweight')) continue;
      const m = name.slice(0, -'.qweight'.length);
      const need = (s: string): TensorInfo => {
        if (!ckpt.has(`${m}.${s}`)) throw new InputError(`${dir}: quantized module "${m}" has no ${s} tensor`);
        return ckpt.info(`${m}.${s}`);
      };
      const [qweight, scales, qzeros] = [need('qweight'), need('scales'), need('qzeros')];
      const { bits, groupSize, symmetric } = schemeOf(m);
      const pf = 32 / bits;
      const cols = qweight.shape[0]! * pf;
      const rows = qweight.shape[1]!;
      const groups = groupSize === -1 ? 1 : Math.ceil(cols / groupSize);
      const bad = (t: TensorInfo, want: string) =>
        new InputError(`${t.file}: tensor "${t.name}" is ${t.dtype} [${t.shape}], expected ${want}`);
      if (qweight.dtype !== 'I32' || qweight.shape.length !== 2) throw bad(qweight, 'I32 [in / pack factor, out]');
      if (!['F16', 'BF16', 'F32'].includes(scales.dtype) || scales.shape.join() !== `${groups},${rows}`)
        throw bad(scales, `float [${groups}, ${rows}]`);
      if (qzeros.dtype !== 'I32' || qzeros.shape.join() !== `${groups},${Math.ceil(rows / pf)}`)
        throw bad(qzeros, `I32 [${groups}, ${Math.ceil(rows / pf)}]`);
      if (ckpt.has(`${m}.g_idx`)) {
        const g = int32Values(await ckpt.readRaw(`${m}.g_idx`));
        const size = groupSize === -1 ? cols : groupSize;
        if (g.length !== cols || g.some((v, i) => v !== Math.floor(i / size)))
          throw new InputError(
            `${ckpt.info(`${m}.g_idx`).file}: tensor "${m}.g_idx" orders groups by activation (desc_act), not supported`,
          );
      }
      modules.set(m, { rows, cols, bits, groupSize, symmetric });
    }
    const decode = async (m: string): Promise<BlockQuantized> => {
      const { rows, cols, bits: b, groupSize, symmetric } = modules.get(m)!;
      const blockSize = groupSize === -1 ? cols : groupSize;
      const groups = Math.ceil(cols / blockSize);
      const codes = transpose(unpackInt32(await ckpt.readRaw(`${m}.qweight`), cols, rows, b, 0), cols, rows, (n) => new Uint8Array(n));
      const stored = unpackInt32(await ckpt.readRaw(`${m}.qzeros`), groups, rows, b, 1);
      const zeros = transpose(stored, groups, rows, (n) => new Uint8Array(n)).map((z) => z + offset);
      const scaleInfo = ckpt.info(`${m}.scales`);
      const scales = transpose(toFloat32(await ckpt.readRaw(`${m}.scales`), scaleInfo.dtype), groups, rows, (n) => new Float32Array(n));
      const half = 1 << (b - 1);
      // A symmetric checkpoint's zero points are all 2^(bits-1); keep them explicit otherwise.
      const implicit = symmetric && zeros.every((z) => z === half);
      return {
        bits: b,
        blockSize,
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
