// `llmopt run` as a library call: validates the recipe against the model and the output folder, then
// runs the stages in order into <output>/NN-<pass>/, skipping those finished earlier with the same hash,
// checking gates after each stage, and writes report.json and report.md.
import { modelFolderOf } from '../model/gguf-model.js';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InputError } from '../core/errors.js';
import { checkRecipe } from './checks.js';
import { checkGates } from './gates.js';
import { listFiles, sourceFingerprint, stageHash } from './hash.js';
import type { Recipe, Stage } from './load.js';
import { writeReport, type RunReport, type StageReport } from './report.js';
import { clearRunFolder, newRunState, readRunFolder, saveRunState, type StageRecord } from './run-state.js';
import { runStage } from './stages.js';

export interface RunOptions {
  /** Re-run from this stage (a name or a 1-based number), even where an earlier run finished it. */
  from?: string;
  /** Take over an output folder that holds another recipe's run or another llmopt output. */
  force?: boolean;
  onStage?: (stage: Stage, status: 'start' | 'skipped' | 'done') => void;
  onProgress?: (stage: Stage, done: number, total: number) => void;
}

function fromIndex(recipe: Recipe, from: string | undefined): number {
  if (from === undefined) return Infinity;
  const i = /^\d+$/.test(from) ? Number(from) - 1 : recipe.stages.findIndex((s) => s.name === from || s.dir === from);
  if (!recipe.stages[i])
    throw new InputError(`--from ${from}: ${recipe.file} has no such stage (stages: ${recipe.stages.map((s) => s.name).join(', ')})`);
  return i;
}

export async function runRecipe(recipe: Recipe, sourcePath: string, output: string, opts: RunOptions = {}): Promise<RunReport> {
  const started = performance.now();
  // A GGUF source is read through its companion folder (model/gguf-model.ts), as every stage reads model folders.
  const source = await modelFolderOf(sourcePath);
  // Everything that can be refused is refused here, before the output folder is touched.
  const planned = checkRecipe(recipe, source);
  const from = fromIndex(recipe, opts.from);
  const earlier = readRunFolder(output, recipe.name, Boolean(opts.force));
  if (earlier.replace) clearRunFolder(output);
  mkdirSync(output, { recursive: true });

  const state = newRunState({ name: recipe.name, path: recipe.path }, resolve(source));
  const hashes = new Map([['source', sourceFingerprint(source)]]);
  const folders = new Map([['source', source]]);
  const stages: StageReport[] = [];
  let failedGate: RunReport['failedGate'] = null;
  for (const { stage, refs, writes } of planned) {
    const dir = join(output, stage.dir);
    const hash = stageHash(Object.fromEntries(Object.entries(refs).map(([k, ref]) => [k, hashes.get(ref)!])), stage.options, recipe.device);
    const previous = earlier.state?.stages.find((s) => s.dir === stage.dir && s.hash === hash);
    let record: StageRecord;
    if (stage.index < from && previous && existsSync(dir)) {
      record = previous;
      opts.onStage?.(stage, 'skipped');
    } else {
      opts.onStage?.(stage, 'start');
      const figures = await runStage(stage, {
        reads: Object.fromEntries(Object.entries(refs).map(([k, ref]) => [k, folders.get(ref)!])),
        source,
        output: dir,
        checkpointDir: join(output, '.checkpoints', stage.dir),
        device: recipe.device,
        onProgress: (done, total) => opts.onProgress?.(stage, done, total),
      });
      record = {
        index: stage.index,
        name: stage.name,
        pass: stage.options.pass,
        dir: stage.dir,
        hash,
        figures,
        finishedAt: new Date().toISOString(),
      };
      opts.onStage?.(stage, 'done');
    }
    state.stages.push(record);
    saveRunState(output, state);
    hashes.set(stage.name, hash);
    if (writes) folders.set(stage.name, dir);
    const { report: _, ...figures } = record.figures;
    const gates = checkGates(stage.options.gate, record.figures);
    stages.push({
      index: stage.index,
      name: stage.name,
      pass: stage.options.pass,
      dir: stage.dir,
      status: record === previous ? 'skipped' : 'ran',
      ...figures,
      gates,
    });
    const failed = gates.find((g) => !g.passed);
    if (failed) {
      failedGate = { ...failed, stage: stage.dir };
      break;
    }
  }
  for (const stage of recipe.stages.slice(stages.length)) {
    stages.push({
      index: stage.index,
      name: stage.name,
      pass: stage.options.pass,
      dir: stage.dir,
      status: 'not run',
      seconds: 0,
      bytes: null,
      kl: null,
      top1: null,
      perplexity: null,
      pplRatio: null,
      tokensPerSecond: null,
      gates: [],
    });
  }
  // Stage folders of an earlier run that this recipe no longer has (its stages were renumbered or removed).
  const current = new Set(recipe.stages.map((s) => s.dir));
  for (const old of earlier.state?.stages ?? []) if (!current.has(old.dir)) rmSync(join(output, old.dir), { recursive: true, force: true });

  const report: RunReport = {
    recipe: { name: recipe.name, file: recipe.file },
    source: { path: source, bytes: listFiles(source).reduce((a, f) => a + f.bytes, 0) },
    output,
    device: recipe.device,
    stages,
    failedGate,
    seconds: (performance.now() - started) / 1000,
  };
  writeReport(output, report);
  return report;
}
