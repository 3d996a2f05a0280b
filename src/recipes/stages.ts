// Runs one recipe stage: calls its pass on the folders it reads, writes into its stage folder, and
// returns the figures the report and the gates use (bytes, KL / top-1 / perplexity against the source,
// tokens/s), with the pass's own report kept whole.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { passRecord } from '../formats/manifest.js';
import { writeModelFolder } from '../formats/model-folder.js';
import { passDefinition } from '../passes/registry.js';
import type { Device } from '../runtime/device.js';
import { listFiles } from './hash.js';
import type { Stage } from './load.js';
import { passValues } from './schema.js';
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

const folderBytes = (dir: string) => listFiles(dir).reduce((a, f) => a + f.bytes, 0);

/** Eval and bench write their figures (result.json) and a marker so a rerun may replace the folder. */
async function writeResult(output: string, pass: string, result: unknown): Promise<void> {
  await writeModelFolder(output, { format: 'llmopt-stage-result', source: null, passes: [passRecord(pass, {})] }, async (tmp) => {
    writeFileSync(join(tmp, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
  });
}

export async function runStage(stage: Stage, ctx: StageContext): Promise<StageFigures> {
  const started = performance.now();
  const def = passDefinition(stage.options.pass);
  const values = passValues(stage.options);
  const { output } = ctx;
  const report = await def.run(values, { ...ctx, onProgress: (done, total) => ctx.onProgress?.(done, total) });
  const writesModel = def.writes(values) !== null;
  if (!writesModel) await writeResult(output, stage.options.pass, report);
  return {
    seconds: (performance.now() - started) / 1000,
    ...NO_FIGURES,
    bytes: writesModel ? folderBytes(output) : null,
    ...def.measured(report),
    report,
  };
}
