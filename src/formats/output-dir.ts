// Writes an output folder atomically: everything goes into a temporary folder beside the target,
// which is renamed into place only when complete, so a failure (or a kill) never leaves a half-written output.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { InputError } from '../core/errors.js';
import { MANIFEST_FILE } from './manifest.js';

export { MANIFEST_FILE };

/** `.NAME.tmp-PID-STAMP`, and `.old` beside it while a replaced target is moved away. */
const TEMP_FOLDER = /^\..+\.tmp-(\d+)-[0-9a-z]+(\.old)?$/;

/** Whether process `pid` is running (EPERM: it is, but another user's). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Removes the temporary folders in `parent` left by writers that no longer run (killed, or the machine
 * went down); one whose process is alive is another write in progress and stays.
 */
export function removeStaleTempFolders(parent: string): string[] {
  const removed: string[] = [];
  if (!existsSync(parent)) return removed;
  for (const name of readdirSync(parent)) {
    const m = TEMP_FOLDER.exec(name);
    if (!m || Number(m[1]) === process.pid || processAlive(Number(m[1]))) continue;
    rmSync(join(parent, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** Refuses to replace a folder llmopt did not write (user data is never lost). */
export function checkReplaceable(target: string): void {
  const abs = resolve(target);
  if (!existsSync(abs)) return;
  const entries = readdirSync(abs);
  if (entries.length > 0 && !entries.includes(MANIFEST_FILE)) {
    throw new InputError(`${target}: exists and is not an llmopt output folder; choose another -o or remove it`);
  }
}

/**
 * Runs `write(tmp)` and moves `tmp` to `target`. An existing target is replaced only when it is
 * an llmopt output (has llmopt.json) or empty; anything else is refused so user data is never lost.
 */
export async function writeOutputDir<T>(target: string, write: (tmp: string) => Promise<T>): Promise<T> {
  const abs = resolve(target);
  checkReplaceable(target);
  const parent = dirname(abs);
  mkdirSync(parent, { recursive: true });
  removeStaleTempFolders(parent);
  const tmp = join(parent, `.${basename(abs)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  mkdirSync(tmp);
  try {
    const result = await write(tmp);
    if (existsSync(abs)) {
      const old = `${tmp}.old`;
      renameSync(abs, old);
      renameSync(tmp, abs);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, abs);
    }
    return result;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
