// Writes an output folder atomically: everything goes into a temporary folder beside the target,
// which is renamed into place only when complete, so a failure never leaves a half-written output.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { InputError } from '../core/errors.js';

/** Marker file that tells llmopt an existing folder is its own output and may be replaced. */
export const MANIFEST_FILE = 'llmopt.json';

/**
 * Runs `write(tmp)` and moves `tmp` to `target`. An existing target is replaced only when it is
 * an llmopt output (has llmopt.json) or empty; anything else is refused so user data is never lost.
 */
export async function writeOutputDir<T>(target: string, write: (tmp: string) => Promise<T>): Promise<T> {
  const abs = resolve(target);
  if (existsSync(abs)) {
    const entries = readdirSync(abs);
    if (entries.length > 0 && !entries.includes(MANIFEST_FILE)) {
      throw new InputError(`${target}: exists and is not an llmopt output folder; choose another -o or remove it`);
    }
  }
  const parent = dirname(abs);
  mkdirSync(parent, { recursive: true });
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
