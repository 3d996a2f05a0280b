// prune: zero weights of the linear layers in N:M groups or unstructured, by magnitude, Wanda or
// SparseGPT, and write a Hugging Face folder with the same tensor names and dtypes as the input, so it
// feeds export, quantize, eval and distill unchanged.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InputError } from '../../core/errors.js';
import { OptionError, type OptionValues } from '../options.js';
import type { PRUNE_OPTIONS } from './definition.js';
import { fromFloat32 } from '../../formats/dtype.js';
import { SafetensorsFile, writeSafetensors, writeShardedCheckpoint, type TensorEntry } from '../../formats/safetensors.js';
import { passRecord, type PassRecord } from '../../formats/manifest.js';
import { writeModelFolder } from '../../formats/model-folder.js';
import { openHfModel } from '../../model/checkpoint.js';
import { fuseParts, fusedLayout } from '../../core/fused.js';
import { calibrateLayerwise, loadModelCalibration, type LayerwiseMethod } from '../calibration.js';
import { selectTargets, type LinearKind, type LinearModule } from '../targets.js';
import { applyMask, checkNm, nmMask, unstructuredMask } from './masks.js';
import { sparsityOf } from '../../model/sparsity.js';
import { magnitudeScores, wandaScores } from './scores.js';
import { sparseGptPrune } from './sparsegpt.js';

export type SparsityStructure = { kind: 'nm'; n: number; m: number } | { kind: 'unstructured'; sparsity: number; scope: 'row' | 'layer' };
export const PRUNE_METHODS = ['magnitude', 'wanda', 'sparsegpt'] as const;
export type PruneMethod = (typeof PRUNE_METHODS)[number];

/**
 * The pass's options: the declared ones (prune/definition.ts), with --sparsity and --scope read into a
 * structure. `sequential` calibrates each layer on inputs that went through the already-pruned layers (as
 * the Wanda and SparseGPT reference code do) or, when false, on the dense model's activations.
 */
export type PruneOptions = Pick<OptionValues<typeof PRUNE_OPTIONS>, 'method' | 'calib' | 'calibSeqLen'> &
  Partial<Pick<OptionValues<typeof PRUNE_OPTIONS>, 'calibSamples' | 'exclude' | 'dampening' | 'sequential'>> & {
    structure: SparsityStructure;
    batchSize?: number;
    onProgress?: (done: number, total: number) => void;
  };

export interface PruneReport {
  output: string;
  method: PruneMethod;
  structure: SparsityStructure;
  targets: number;
  /** Zero fraction over all targeted weights. */
  sparsity: number;
  byKind: Partial<Record<LinearKind, { tensors: number; sparsity: number }>>;
  tensors: Array<{ name: string; sparsity: number; nmViolations: number | null }>;
  calibrationTokens: number;
  seconds: number;
}

/** "2:4" (N:M, N kept of every M) or a fraction such as "0.5" (unstructured). */
export function parseSparsity(value: string, scope: 'row' | 'layer' = 'row'): SparsityStructure {
  const nm = /^(\d+):(\d+)$/.exec(value.trim());
  if (nm) {
    const n = Number(nm[1]);
    const m = Number(nm[2]);
    if (n < 1 || n >= m)
      throw new OptionError('sparsity', (k) => `${k('sparsity')} ${value}: N:M needs 1 <= N < M (N weights kept of every M)`);
    return { kind: 'nm', n, m };
  }
  const f = Number(value);
  if (value.trim() === '' || !Number.isFinite(f) || f <= 0 || f >= 1) {
    throw new OptionError('sparsity', (k) => `${k('sparsity')} ${value}: expected N:M (such as 2:4) or a fraction in (0, 1)`);
  }
  return { kind: 'unstructured', sparsity: f, scope };
}

function describe(s: SparsityStructure): string {
  return s.kind === 'nm' ? `${s.n}:${s.m}` : `${s.sparsity} unstructured (per ${s.scope})`;
}

/** The mask (1 = keep) of a structure over scores. */
function maskOf(s: SparsityStructure, scores: Float32Array, rows: number, cols: number): Uint8Array {
  return s.kind === 'nm' ? nmMask(scores, rows, cols, s.n, s.m) : unstructuredMask(scores, rows, cols, s.sparsity, s.scope);
}

export async function prune(source: string, output: string, opts: PruneOptions): Promise<PruneReport> {
  const started = performance.now();
  const { structure, method } = opts;
  const model = await openHfModel(source);
  const { spec } = model;
  try {
    const checkpoint = model.checkpoint;
    if (model.gguf) throw new InputError(`${model.gguf}: prune reads Hugging Face folders, not GGUF files (export and quantize read GGUF)`);
    if (!checkpoint)
      throw new InputError(`${source}: already quantized (${model.quantization}); prune the float checkpoint, then quantize`);
    const targets = selectTargets(spec, opts.exclude ?? []);
    if (targets.length === 0) throw new InputError('--exclude leaves no layer to prune');
    if (structure.kind === 'nm') {
      const bad = targets.find((t) => t.cols % structure.m !== 0);
      if (bad)
        throw new InputError(
          `${bad.module}.weight: in_features ${bad.cols} is not divisible by M=${structure.m} ` +
            `for --sparsity ${structure.n}:${structure.m}; ` +
            `exclude such modules with --exclude "*${bad.kind}_proj" or choose an M that divides ${bad.cols}`,
        );
    }
    if (method === 'sparsegpt' && structure.kind === 'unstructured' && structure.scope === 'layer') {
      throw new InputError('--scope layer works with --method magnitude or wanda; sparsegpt prunes each output row to the same sparsity');
    }
    const calibrated = method !== 'magnitude';
    if (calibrated && !opts.calib) throw new InputError(`--method ${method} needs calibration text: give --calib <file>`);
    const calibSet = calibrated ? loadModelCalibration(opts.calib!, source, spec, opts.calibSamples, opts.calibSeqLen) : null;

    const byModule = new Map(targets.map((t) => [`${t.module}.weight`, t]));
    const report: PruneReport = {
      output,
      method,
      structure,
      targets: targets.length,
      sparsity: 0,
      byKind: {},
      tensors: [],
      calibrationTokens: 0,
      seconds: 0,
    };

    // The record holds the resolved options the write computes (sparsity, calibration tokens).
    const passes: PassRecord[] = [];
    return await writeModelFolder(output, { format: 'llmopt-checkpoint', source, passes }, async (tmp) => {
      const staging = join(tmp, '.staging');
      mkdirSync(staging);
      const staged = new Map<string, SafetensorsFile>();
      if (calibSet) {
        const pruner: LayerwiseMethod = {
          statistic: method === 'wanda' ? 'norms' : 'hessian',
          compress: (t, w, inputs) => {
            if (method === 'wanda') return applyMask(w, maskOf(structure, wandaScores(w, t.rows, t.cols, inputs.norms!), t.rows, t.cols));
            const st = structure.kind === 'nm' ? structure : { kind: 'unstructured' as const, sparsity: structure.sparsity };
            const dampening = opts.dampening ?? 0.01;
            return sparseGptPrune(w, t.rows, t.cols, inputs.hessian!, inputs.tokens, { structure: st, dampening }).pruned;
          },
          // Each layer's pruned weights go to disk at once, so memory holds one layer's, not the model's.
          layerDone: async (layer, inLayer, pruned) => {
            const file = join(staging, `layer${layer}.safetensors`);
            const entries: TensorEntry[] = inLayer.map((t) => ({ name: `${t.module}.weight`, dtype: 'F32', shape: [t.rows, t.cols] }));
            await writeSafetensors(file, entries, (name) => new Uint8Array(pruned.get(name)!.buffer));
            const handle = await SafetensorsFile.open(file);
            for (const e of entries) staged.set(e.name, handle);
          },
        };
        const layerwise = { batchSize: opts.batchSize, sequential: opts.sequential, onProgress: opts.onProgress };
        report.calibrationTokens = (await calibrateLayerwise(spec, model.weights, calibSet, targets, pruner, layerwise)).tokens;
      }

      // Write every tensor of the source in its dtype: targets pruned, the rest copied byte for byte.
      const entries: TensorEntry[] = checkpoint.names().map((name) => {
        const info = checkpoint.info(name);
        return { name, dtype: info.dtype, shape: info.shape };
      });
      const kindTotals = new Map<LinearKind, { tensors: number; zeros: number; count: number }>();
      let zeros = 0;
      let count = 0;
      // Fused tensors (Phi-3's qkv_proj, gate_up_proj) are written fused again: their parts' rows, pruned or not.
      const fused = fusedLayout(spec);
      const produce = async (name: string): Promise<Uint8Array> => {
        const f = fused.get(name);
        if (f?.parts.some((p) => byModule.has(p.name))) {
          const w = await fuseParts(f, async (part) => (byModule.has(part) ? prunedWeight(part) : model.weights.readFloat32(part)));
          return fromFloat32(w, checkpoint.info(name).dtype as 'F32' | 'F16' | 'BF16');
        }
        return byModule.has(name) ? produceTarget(name) : checkpoint.readRaw(name);
      };
      const produceTarget = async (name: string): Promise<Uint8Array> =>
        fromFloat32(await prunedWeight(name), checkpoint.info(name).dtype as 'F32' | 'F16' | 'BF16');
      const prunedWeight = async (name: string): Promise<Float32Array> => {
        const t = byModule.get(name)!;
        let w: Float32Array;
        const stagedFile = staged.get(name);
        if (stagedFile) w = await stagedFile.readFloat32(name);
        else {
          w = await model.weights.readFloat32(name);
          applyMask(w, maskOf(structure, magnitudeScores(w), t.rows, t.cols));
          if (!calibrated) opts.onProgress?.(report.tensors.length + 1, targets.length);
        }
        recordTensor(report, t, w, structure, kindTotals);
        const z = Math.round(sparsityOf(w) * w.length);
        zeros += z;
        count += w.length;
        return w;
      };
      if (existsSync(join(source, 'model.safetensors')))
        await writeSafetensors(join(tmp, 'model.safetensors'), entries, produce, { format: 'pt' });
      else
        await writeShardedCheckpoint(tmp, entries, produce, {
          maxShardBytes: largestShardBytes(checkpoint.totalBytes, source),
          metadata: { format: 'pt' },
        });
      for (const f of staged.values()) await f.close().catch(() => {});
      rmSync(staging, { recursive: true, force: true });

      report.sparsity = zeros / count;
      for (const [kind, v] of kindTotals) report.byKind[kind] = { tensors: v.tensors, sparsity: v.zeros / v.count };
      report.seconds = (performance.now() - started) / 1000;

      const config = JSON.parse(readFileSync(join(source, 'config.json'), 'utf8'));
      config.llmopt_pruning = {
        structure: describe(structure),
        method,
        targets: [...new Set(targets.map((t) => t.kind))].map((k) => `${k}_proj`),
        excluded: opts.exclude ?? [],
        sparsity: +report.sparsity.toFixed(6),
        calibration: calibSet
          ? {
              file: resolve(calibSet.path),
              windows: calibSet.windows.length,
              tokens: report.calibrationTokens,
              sequential: opts.sequential !== false,
            }
          : null,
      };
      writeFileSync(join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
      passes.push(passRecord('prune', config.llmopt_pruning));
      return report;
    });
  } finally {
    await model.close();
  }
}

function recordTensor(
  report: PruneReport,
  t: LinearModule,
  w: Float32Array,
  s: SparsityStructure,
  kinds: Map<LinearKind, { tensors: number; zeros: number; count: number }>,
): void {
  const sparsity = sparsityOf(w);
  report.tensors.push({
    name: `${t.module}.weight`,
    sparsity,
    nmViolations: s.kind === 'nm' ? checkNm(w, t.rows, t.cols, s.n, s.m) : null,
  });
  const k = kinds.get(t.kind) ?? { tensors: 0, zeros: 0, count: 0 };
  k.tensors++;
  k.zeros += Math.round(sparsity * w.length);
  k.count += w.length;
  kinds.set(t.kind, k);
}

/** Shard size for a sharded output: the source's total split over as many shards as it had. */
function largestShardBytes(totalBytes: number, source: string): number {
  const index = JSON.parse(readFileSync(join(source, 'model.safetensors.index.json'), 'utf8'));
  const shards = new Set(Object.values(index.weight_map as Record<string, string>)).size;
  return Math.ceil((totalBytes * 1.1) / shards);
}
