// Resumable distillation checkpoints: the student's weights and AdamW's moments in one safetensors file
// plus state.json (step, time, tokens, the options that must match on --resume), replaced atomically.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../core/errors.js';
import { SafetensorsFile, writeSafetensors } from '../../formats/safetensors.js';
import type { OptimizerState } from './optimizer.js';

export interface CheckpointState {
  step: number;
  seconds: number;
  tokens: number;
  options: Record<string, unknown>;
}

/** Writes the checkpoint into `dir` through `dir`.tmp, so a kill mid-write keeps the previous one. */
export async function writeCheckpoint(
  dir: string,
  weights: Map<string, Float32Array>,
  opt: OptimizerState,
  state: CheckpointState,
): Promise<void> {
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  // One file: weights as w.NAME, AdamW's moments as m.NAME and v.NAME, all float32, flat.
  const all = new Map<string, Float32Array>();
  for (const [prefix, m] of [
    ['w.', weights],
    ['m.', opt.m],
    ['v.', opt.v],
  ] as const)
    for (const [n, w] of m) all.set(`${prefix}${n}`, w);
  const entries = [...all].map(([name, w]) => ({ name, dtype: 'F32' as const, shape: [w.length] }));
  await writeSafetensors(join(tmp, 'state.safetensors'), entries, (n) => new Uint8Array(all.get(n)!.buffer));
  writeFileSync(join(tmp, 'state.json'), JSON.stringify({ ...state, optimizerStep: opt.step }, null, 2));
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
}

/** Reads the checkpoint in `dir` into `weights` (in place) and returns the optimizer state and progress. */
export async function readCheckpoint(
  dir: string,
  weights: Map<string, Float32Array>,
): Promise<{ opt: OptimizerState; state: CheckpointState }> {
  if (!existsSync(join(dir, 'state.json'))) throw new InputError(`--resume: no checkpoint in ${dir}`);
  const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
  const f = await SafetensorsFile.open(join(dir, 'state.safetensors'));
  const opt: OptimizerState = { step: state.optimizerStep, m: new Map(), v: new Map() };
  try {
    for (const [name, w] of weights) {
      if (!f.tensors.has(`w.${name}`)) throw new InputError(`${dir}: checkpoint has no ${name} (another student?)`);
      w.set(await f.readFloat32(`w.${name}`));
      opt.m.set(name, await f.readFloat32(`m.${name}`));
      opt.v.set(name, await f.readFloat32(`v.${name}`));
    }
  } finally {
    await f.close();
  }
  return { opt, state };
}
