// quantize's Hugging Face outputs (compressed-tensors, GPTQ, AWQ) for vLLM and the other engines: the checks of vLLM's
// rules made before any work (fused groups, zero-point packing, kernels and group sizes) and the write itself.
import { join } from 'node:path';
import { InputError } from '../../core/errors.js';
import type { BlockQuantized } from '../../core/block-quant.js';
import { fusedLayout } from '../../core/fused.js';
import type { DecoderSpec } from '../../core/spec.js';
import { writeAwqCheckpoint } from '../../formats/awq-checkpoint.js';
import { writeCompressedTensorsCheckpoint } from '../../formats/compressed-tensors.js';
import { writeGptqCheckpoint } from '../../formats/gptq-checkpoint.js';
import { readJsonFile } from '../../formats/hf-config.js';
import { fromFloat32 } from '../../formats/dtype.js';
import type { Checkpoint } from '../../formats/safetensors.js';
import {
  splitFusedModules,
  vllmGroupSizeProblem,
  vllmKernelProblem,
  vllmLinears,
  zeroPointShardProblem,
  type ServeDtype,
  type VllmLinear,
} from '../../formats/vllm-rules.js';
import type { QuantGrid } from './blockwise.js';
import { AWQ_MIX_REFUSAL } from './mix-policy.js';

/** The Hugging Face checkpoint formats quantize writes. */
export type HfQuantFormat = 'compressed-tensors' | 'gptq' | 'awq';

/** The scheme and the options that decide how strictly vLLM's rules are applied. */
export interface HfFormatPlan {
  format: HfQuantFormat;
  bits: 4 | 8;
  symmetric: boolean;
  blockSize: number;
  serveDtype: ServeDtype;
  strict: boolean;
  /** --mix gives some modules int8: the kernel checks wait for the plan (checkHfMix). */
  mixed?: boolean;
}

/** How each format's own quantizer picks codes (blockwise.ts QuantGrid): see the formats' headers. */
export function gridOf(format: HfQuantFormat, symmetric: boolean): QuantGrid {
  if (format === 'compressed-tensors') return { fullRange: true };
  return { fullRange: true, float16Scales: true, ...(format === 'gptq' && !symmetric ? { minZero: 1 } : {}) };
}

/** Option checks that need only the scheme: the group sizes no vLLM kernel takes, AWQ's 4 bits. Returns a message or null. */
export function hfSchemeProblem(p: Omit<HfFormatPlan, 'strict'>): { option: string; message: string } | null {
  if (p.format === 'awq' && p.bits !== 4) return { option: 'to', message: `--format awq stores int4 weights only (AutoAWQ's GEMM layout)` };
  if (p.format !== 'compressed-tensors') return null;
  const why = vllmGroupSizeProblem({ bits: p.bits, symmetric: p.symmetric, groupSize: p.blockSize }, p.serveDtype);
  if (why === null) return null;
  const scheme = `${p.bits}-bit ${p.symmetric ? 'symmetric' : 'asymmetric'} groups of ${p.blockSize}`;
  return { option: 'blockSize', message: `no vLLM kernel serves ${scheme} at ${p.serveDtype} (${why})` };
}

/** What the checks decided: the modules to quantize (fused groups widened) and the warnings to show. */
export interface HfTargets {
  quantized: Set<string>;
  warnings: string[];
}

const shardNames = (l: VllmLinear) => l.shards.map((s) => s.module.split('.').at(-1)).join(', ');

/**
 * Applies vLLM's rules to the modules the options target, before anything is read. A fused group split by --exclude
 * is kept whole in float (the user asked for float on part of it, and float is the safe side), with a warning; under
 * --strict it is refused. Zero points vLLM would misplace are always refused. Modules no kernel serves at the serve
 * dtype warn, or are refused under --strict. Throws InputError naming the module and the rule.
 */
export function planHfTargets(spec: DecoderSpec, targets: ReadonlySet<string>, p: HfFormatPlan): HfTargets {
  const linears = vllmLinears(spec);
  const quantized = new Set(targets);
  const warnings: string[] = [];
  for (const l of splitFusedModules(linears, quantized)) {
    const float = l.shards.filter((s) => !quantized.has(s.module)).map((s) => s.module.split('.').at(-1));
    const rule =
      `${l.name} fuses ${shardNames(l)} and --exclude keeps ${float.join(', ')} in float; ` +
      `vLLM requires one scheme for all shards of a fused module (compressed_tensors/utils.py, should_ignore_layer)`;
    if (p.strict) throw new InputError(`--strict: ${rule}; exclude all of them or none`);
    warnings.push(`${rule}: kept all of ${l.name} in float`);
    for (const s of l.shards) quantized.delete(s.module);
  }
  const kept = linears.filter((l) => l.shards.every((s) => quantized.has(s.module)));
  // GPTQ and AWQ always store zero points packed along out_features; compressed-tensors only when asymmetric.
  if (!p.symmetric || p.format !== 'compressed-tensors') {
    const why = zeroPointShardProblem(kept, p.bits);
    if (why) {
      const what = p.format === 'compressed-tensors' ? '--asymmetric' : `--format ${p.format}`;
      const fix = p.format === 'compressed-tensors' ? 'quantize symmetrically' : 'use --format compressed-tensors';
      throw new InputError(
        `${what}: ${why}, so vLLM's loader cannot place its packed zero points ` +
          `(compressed_tensors_wNa16.py create_weights, parameter.py adjust_shard_indexes_for_packing); ${fix} or --exclude it`,
      );
    }
  }
  // With a mix the kernels are checked once the plan gives each module its width (checkHfMix).
  if (p.format === 'compressed-tensors' && !p.mixed) warnings.push(...kernelWarnings(kept, p, p));
  // Whole groups of whole int32 words along in_features (compressed-tensors' quantize, vLLM's create_weights): checked
  // here too, so a large model is refused before any calibration.
  const ragged = kept.find((l) => l.cols % p.blockSize !== 0 || l.cols % (32 / p.bits) !== 0);
  if (ragged) {
    const fits = [128, 64, 32, 16].filter((g) => ragged.cols % g === 0);
    throw new InputError(
      `tensor "${ragged.shards[0]!.module}.weight": in_features ${ragged.cols} is not a multiple of block size ${p.blockSize}, ` +
        `which --format ${p.format} and vLLM require; ` +
        `${fits.length ? `use a block size that divides it (${fits.join(', ')})` : 'no block size divides it'}, or --exclude the module`,
    );
  }
  return { quantized, warnings };
}

/**
 * Modules no vLLM kernel serves at `scheme` (compressed-tensors only: GPTQ and AWQ keep their own kernel choice), one
 * line per module kind and reason (the layers share their shapes); under --strict the first is refused.
 */
function kernelWarnings(linears: VllmLinear[], scheme: { bits: 4 | 8; symmetric: boolean }, p: HfFormatPlan): string[] {
  const byRule = new Map<string, number[]>();
  const what = p.mixed ? `${scheme.bits}-bit ${scheme.symmetric ? 'symmetric' : 'asymmetric'} ` : '';
  for (const l of linears) {
    const why = vllmKernelProblem(l, { ...scheme, groupSize: p.blockSize }, p.serveDtype);
    if (why === null) continue;
    const key = `${l.name.replace(/^model\.layers\.\d+\./, '')}\u0000${why}`;
    if (p.strict) throw new InputError(`--strict: no vLLM kernel serves ${what}${l.name} at ${p.serveDtype}: ${why}`);
    const layer = Number(/^model\.layers\.(\d+)\./.exec(l.name)?.[1] ?? -1);
    byRule.set(key, [...(byRule.get(key) ?? []), layer]);
  }
  return [...byRule].map(([key, layers]) => {
    const [module, why] = key.split('\u0000');
    return `${what}${module} in layers ${layers.join(', ')}: no vLLM kernel serves it at ${p.serveDtype} (${why}; kernels/mixed_precision)`;
  });
}

/**
 * The key --mix ties a module to for these formats: vLLM's fused Linear (qkv_proj, gate_up_proj) for its shards, so
 * a mix raises q/k/v or gate/up together (vLLM builds one kernel per fused module, of one scheme:
 * compressed_tensors/utils.py find_matched_target matches a fused module only when all its shards match, and
 * returns the first shard's group; gptq_utils.py get_linear_quant_method applies one override to the fused prefix).
 */
export function hfMixTie(spec: DecoderSpec): (module: string) => string {
  const fusedOf = new Map<string, string>();
  for (const l of vllmLinears(spec)) for (const s of l.shards) fusedOf.set(s.module, l.name);
  return (module) => fusedOf.get(module) ?? module;
}

/**
 * vLLM's rules once a mix has given each quantized module its width: every fused module whole at one width (the tie
 * guarantees it; a split is a bug), and for compressed-tensors the kernels at each module's scheme (warnings, or
 * refused under --strict).
 */
export function checkHfMix(
  spec: DecoderSpec,
  quantized: ReadonlySet<string>,
  raised: ReadonlySet<string>,
  high: { bits: 4 | 8; symmetric: boolean },
  p: HfFormatPlan,
): string[] {
  const linears = vllmLinears(spec).filter((l) => quantized.has(l.shards[0]!.module));
  const split = linears.find((l) => {
    const n = l.shards.filter((s) => raised.has(s.module)).length;
    return n > 0 && n < l.shards.length;
  });
  if (split) throw new Error(`${split.name}: the mix raised only some of its shards (hfMixTie keeps them together)`);
  if (p.format !== 'compressed-tensors') return [];
  const isRaised = (l: VllmLinear) => raised.has(l.shards[0]!.module);
  return [
    ...kernelWarnings(
      linears.filter((l) => !isRaised(l)),
      p,
      p,
    ),
    ...kernelWarnings(linears.filter(isRaised), high, p),
  ];
}

/**
 * The quantized layers and float modules under the checkpoint's own names: the parts of a fused tensor (Phi-3's
 * q/k/v in qkv_proj) stacked row-wise into one quantized module, as vLLM loads it (planHfTargets keeps them whole).
 */
function storedLayers(spec: DecoderSpec, layers: Map<string, BlockQuantized>, excluded: string[]) {
  const out = new Map(layers);
  const ignore = new Set(excluded);
  for (const f of fusedLayout(spec).values()) {
    if (!f.name.endsWith('.weight')) continue;
    const modules = f.parts.map((p) => p.name.replace(/\.weight$/, ''));
    const module = f.name.replace(/\.weight$/, '');
    const quantized = modules.filter((m) => layers.has(m));
    if (quantized.length > 0 && quantized.length < modules.length)
      throw new Error(`${module}: fused parts split (planHfTargets keeps them whole)`);
    for (const m of modules) {
      out.delete(m);
      ignore.delete(m);
    }
    if (quantized.length === 0) ignore.add(module);
    else out.set(module, stackRows(modules.map((m) => layers.get(m)!)));
  }
  return { layers: out, ignore: [...ignore] };
}

/** Quantized matrices of one scheme stacked by rows (codes, scales and zero points are all row-major per row). */
function stackRows(parts: BlockQuantized[]): BlockQuantized {
  const cat = <T extends Uint8Array | Float32Array>(xs: T[], out: T): T => {
    let at = 0;
    for (const x of xs) {
      out.set(x, at);
      at += x.length;
    }
    return out;
  };
  const first = parts[0]!;
  if (parts.some((p) => p.bits !== first.bits || p.symmetric !== first.symmetric || p.blockSize !== first.blockSize))
    throw new Error('fused parts quantized with different schemes (hfMixTie keeps them at one width)');
  const rows = parts.reduce((a, p) => a + p.rows, 0);
  return {
    ...first,
    rows,
    codes: cat(
      parts.map((p) => p.codes),
      new Uint8Array(rows * first.cols),
    ),
    scales: cat(
      parts.map((p) => p.scales),
      new Float32Array(rows * first.blocksPerRow),
    ),
    zeroPoints: first.zeroPoints
      ? cat(
          parts.map((p) => p.zeroPoints!),
          new Uint8Array(rows * first.blocksPerRow),
        )
      : null,
  };
}

/**
 * Writes the quantized layers and every other tensor of `source` (byte for byte, or `overrides`' values in the stored
 * dtype: AWQ's folded norms) into `dir` in `format`.
 */
export async function writeHfFormat(
  format: HfQuantFormat,
  dir: string,
  spec: DecoderSpec,
  sourceDir: string,
  source: Checkpoint,
  layers: Map<string, BlockQuantized>,
  excluded: string[],
  overrides?: ReadonlyMap<string, Float32Array>,
): Promise<void> {
  const stored = storedLayers(spec, layers, excluded);
  for (const name of overrides?.keys() ?? []) {
    const dtype = source.has(name) ? source.info(name).dtype : null;
    if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16')
      throw new InputError(
        `${name}: AWQ folded its scales into it, but the checkpoint ${dtype ? `stores it as ${dtype}` : 'has no such tensor'}`,
      );
  }
  const readFloat = async (name: string): Promise<Uint8Array> => {
    const o = overrides?.get(name);
    return o ? fromFloat32(o, source.info(name).dtype as 'F32' | 'F16' | 'BF16') : source.readRaw(name);
  };
  const quantizedNames = new Set([...stored.layers.keys()].map((m) => `${m}.weight`));
  const floatTensors = source
    .names()
    .filter((n) => !quantizedNames.has(n))
    .map((name) => ({ name, dtype: source.info(name).dtype, shape: source.info(name).shape }));
  const common = {
    sourceConfig: readJsonFile(join(sourceDir, 'config.json')),
    layers: stored.layers,
    floatTensors,
    readFloat,
  };
  if (format === 'compressed-tensors') {
    // float32 scales keep llmopt's reader exact; vLLM casts scales to the model dtype on load.
    return writeCompressedTensorsCheckpoint(dir, { ...common, scaleDtype: 'F32', ignore: stored.ignore });
  }
  // A module under every name a loader may look it up by: the stored one and vLLM's fused module (Phi-3's stored
  // qkv_proj is its own fused name).
  const tie = hfMixTie(spec);
  const byLoaderName = (modules: Iterable<string>) => {
    const groups = new Map<string, Set<string>>();
    for (const m of modules) {
      const fused = tie(m);
      groups.set(fused, (groups.get(fused) ?? new Set([fused])).add(m));
    }
    return [...groups.values()].map((names) => [...names]);
  };
  const skipped = byLoaderName(stored.ignore);
  if (format === 'awq') {
    const widths = new Set([...stored.layers.values()].map((q) => q.bits));
    if (widths.size > 1) throw new InputError(`--format awq cannot mix widths: ${AWQ_MIX_REFUSAL}`);
    return writeAwqCheckpoint(dir, { ...common, skipped });
  }
  // GPTQ: every quantized module's names, grouped; the writer keeps the groups wider than the base as `dynamic` rules.
  return writeGptqCheckpoint(dir, { ...common, skipped, raised: byLoaderName(stored.layers.keys()) });
}
