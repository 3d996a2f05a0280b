// The run folder's record, llmopt-run.json: which recipe owns the folder and, per finished stage, its
// hash and figures. It is rewritten atomically after every stage, so a crash loses at most one stage.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { TOOL_VERSION } from '../formats/artifact.js';
import { MANIFEST_FILE } from '../formats/output-dir.js';
import type { StageFigures } from './stages.js';

export const RUN_FILE = 'llmopt-run.json';

export interface StageRecord {
  index: number;
  name: string;
  pass: string;
  dir: string;
  hash: string;
  figures: StageFigures;
  finishedAt: string;
}

export interface RunState {
  format: 'llmopt-run';
  formatVersion: 1;
  tool: { name: 'llmopt'; version: string };
  recipe: { name: string; path: string };
  source: string;
  stages: StageRecord[];
}

/** Writes `text` to `path` through a temporary file and a rename. */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/**
 * The record of an earlier run of the same recipe in `dir` (null for a new or empty folder). Another
 * recipe's run, or any other llmopt output, is refused unless `force`; a folder llmopt did not write is
 * always refused. Nothing is changed here: a refused run leaves the folder as it was.
 */
export function readRunFolder(dir: string, recipeName: string, force: boolean): { state: RunState | null; replace: boolean } {
  if (!existsSync(dir)) return { state: null, replace: false };
  const entries = readdirSync(dir);
  if (entries.length === 0) return { state: null, replace: false };
  if (existsSync(join(dir, RUN_FILE))) {
    let state: RunState;
    try {
      state = JSON.parse(readFileSync(join(dir, RUN_FILE), 'utf8')) as RunState;
    } catch (e) {
      throw new InputError(`${join(dir, RUN_FILE)}: unreadable run record (${(e as Error).message}); choose another -o`);
    }
    if (state.recipe?.name === recipeName) return { state, replace: false };
    if (!force)
      throw new InputError(
        `${dir}: holds a run of recipe "${state.recipe?.name}", not "${recipeName}"; choose another -o, or add --force to replace it`,
      );
    return { state: null, replace: true };
  }
  if (entries.includes(MANIFEST_FILE)) {
    if (!force)
      throw new InputError(`${dir}: holds another llmopt output, not a recipe run; choose another -o, or add --force to replace it`);
    return { state: null, replace: true };
  }
  throw new InputError(`${dir}: exists and is not an llmopt output folder; choose another -o or remove it`);
}

/** Empties an llmopt output folder that --force lets a new run take over. */
export function clearRunFolder(dir: string): void {
  for (const entry of readdirSync(dir)) rmSync(join(dir, entry), { recursive: true, force: true });
}

export function newRunState(recipe: { name: string; path: string }, source: string): RunState {
  return { format: 'llmopt-run', formatVersion: 1, tool: { name: 'llmopt', version: TOOL_VERSION }, recipe, source, stages: [] };
}

export function saveRunState(dir: string, state: RunState): void {
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(join(dir, RUN_FILE), `${JSON.stringify(state, null, 2)}\n`);
}
