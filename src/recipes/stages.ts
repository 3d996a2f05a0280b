// Runs one recipe stage: calls its pass on the folders it reads, writes into its stage folder, and
// returns the figures the report and the gates use (bytes, KL / top-1 / perplexity against the source,
// tokens/s), with the pass's own report kept whole.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { passRecord } from '../formats/manifest.js';
import { writeModelFolder } from '../formats/model-folder.js';
import { compareModels } from '../eval/compare.js';
import type { EvalReport } from '../eval/evaluate.js';
import { exportModel } from '../passes/export.js';
import { prune } from '../passes/prune/prune.js';
import { quantize } from '../passes/quantize/quantize.js';
import { distill } from '../passes/distill/distill.js';
import { shardModel } from '../passes/shard/shard.js';
import { runBench, type BenchReport } from '../bench/bench.js';
import type { Device } from '../runtime/device.js';
import { listFiles } from './hash.js';
import { benchOptions, distillOptions, pruneOptions, quantizeOptions, shardOptions } from './pass-options.js';
import type { Stage } from './load.js';

export interface StageFigures {
  seconds: number;
  /** Bytes the stage wrote (model stages; null for eval and bench). */
  bytes: number | null;
  /** Against the source (or the eval stage's reference). */
  kl: number | null;
  top1: number | null;
  perplexity: number | null;
  pplRatio: number | null;
  tokensPerSecond: number | null;
  /** The pass's own report, as its command's --json prints it. */
  report: unknown;
}

export interface StageContext {
  /** Folders the stage reads, by reference key (input, teacher, reference, draft). */
  reads: Record<string, string>;
  source: string;
  output: string;
  /** Where distillation checkpoints go (inside the run folder, out of the stage folder). */
  checkpointDir: string;
  device: Device;
  onProgress?: (done: number, total: number) => void;
}

const NO_FIGURES = { bytes: null, kl: null, top1: null, perplexity: null, pplRatio: null, tokensPerSecond: null };

function quality(e: EvalReport | null) {
  return e?.reference ? { kl: e.reference.kl, top1: e.reference.top1, perplexity: e.perplexity, pplRatio: e.reference.pplRatio } : {};
}

const folderBytes = (dir: string) => listFiles(dir).reduce((a, f) => a + f.bytes, 0);

/** Eval and bench write their figures (result.json) and a marker so a rerun may replace the folder. */
async function writeResult(output: string, pass: string, result: unknown): Promise<void> {
  await writeModelFolder(output, { format: 'llmopt-stage-result', source: null, passes: [passRecord(pass, {})] }, async (tmp) => {
    writeFileSync(join(tmp, 'result.json'), JSON.stringify(result, null, 2) + '\n');
  });
}

/** The headline speed of a bench: with the draft when there is one, else decode at the first batch size, else the trace's continuous batching. */
function benchSpeed(r: BenchReport): number | null {
  return r.speculative[0]?.speculativeTokensPerSecond.median ?? r.batching[0]?.decodeTokensPerSecond.median ?? r.serving.find((s) => s.policy === 'continuous')?.throughput.median ?? null;
}

export async function runStage(stage: Stage, ctx: StageContext): Promise<StageFigures> {
  const started = performance.now();
  const o = stage.options;
  const { reads, output, device, onProgress } = ctx;
  const compare = (file: string | true | undefined) => (typeof file === 'string' ? compareModels(output, ctx.source, file, { device }) : Promise.resolve(null));
  let figures: Omit<StageFigures, 'seconds'>;
  switch (o.pass) {
    case 'prune': {
      const report = await prune(reads.input!, output, { ...pruneOptions(o), onProgress });
      const e = await compare(o.eval);
      figures = { ...NO_FIGURES, bytes: folderBytes(output), ...quality(e), report: { ...report, eval: e } };
      break;
    }
    case 'quantize': {
      const report = await quantize(reads.input!, output, { ...quantizeOptions(o), onProgress: (d, t) => onProgress?.(d, t) });
      const e = await compare(o.eval);
      figures = { ...NO_FIGURES, bytes: folderBytes(output), ...quality(e), report: { ...report, eval: e } };
      break;
    }
    case 'distill': {
      const report = await distill(output, { ...distillOptions(o, reads.teacher!, reads.input!, device, ctx.checkpointDir), onStep: (s) => onProgress?.(s.step, s.steps) });
      const a = report.after;
      figures = { ...NO_FIGURES, bytes: folderBytes(output), ...(a ? { kl: a.kl, top1: a.top1, perplexity: a.perplexity, pplRatio: a.perplexity / a.teacherPerplexity } : {}), report };
      break;
    }
    case 'export': {
      const report = await exportModel(reads.input!, output, { attention: o.attention, layout: o.layout, onProgress });
      figures = { ...NO_FIGURES, bytes: folderBytes(output), report };
      break;
    }
    case 'shard': {
      const report = await shardModel(reads.input!, output, { ...shardOptions(o), onProgress });
      figures = { ...NO_FIGURES, bytes: folderBytes(output), report };
      break;
    }
    case 'eval': {
      const report = await compareModels(reads.input!, reads.reference!, o.data as string, { device, batchSize: o.batch_size, limit: o.limit, onProgress });
      await writeResult(output, o.pass, report);
      figures = { ...NO_FIGURES, ...quality(report), report };
      break;
    }
    case 'bench': {
      const report = await runBench(benchOptions(o, reads.input!, reads.draft, device));
      await writeResult(output, o.pass, report);
      figures = { ...NO_FIGURES, tokensPerSecond: benchSpeed(report), report };
      break;
    }
  }
  return { seconds: (performance.now() - started) / 1000, ...figures };
}
