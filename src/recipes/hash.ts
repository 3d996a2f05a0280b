// Stage hashes for resuming: a stage's hash covers what it reads (the source's fingerprint or the hash of
// the stage that wrote its input), its resolved options (text files by content) and the tool version,
// so a finished stage with the same hash is skipped and an edit re-runs that stage and those after it.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TOOL_VERSION } from '../formats/artifact.js';
import { PATH_KEYS, type StageOptions } from './schema.js';

const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');

/** Every file below `dir` with its size (bytes), sorted by relative path. */
export function listFiles(dir: string, prefix = ''): Array<{ path: string; bytes: number; mtimeMs: number }> {
  const out: Array<{ path: string; bytes: number; mtimeMs: number }> = [];
  for (const entry of readdirSync(join(dir, prefix), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const rel = join(prefix, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(dir, rel));
    else if (entry.isFile()) {
      const s = statSync(join(dir, rel));
      out.push({ path: rel, bytes: s.size, mtimeMs: s.mtimeMs });
    }
  }
  return out;
}

/**
 * The source model's fingerprint: config.json by content and every other file by size and time
 * (reading gigabytes of weights on every run would cost more than it protects).
 */
export function sourceFingerprint(dir: string): string {
  const files = listFiles(dir).map((f) =>
    f.path === 'config.json' ? { path: f.path, sha256: sha256(readFileSync(join(dir, f.path))) } : f,
  );
  return sha256(JSON.stringify(files));
}

/** The hash of a stage from the hashes of what it reads, its options and the device it runs on. */
export function stageHash(inputs: Record<string, string>, options: StageOptions, device: string): string {
  const { gate: _gate, name: _name, ...resolved } = options as Record<string, unknown>;
  // Gates are checked again on every run from the recorded figures: changing one re-runs nothing.
  for (const k of PATH_KEYS)
    if (typeof resolved[k] === 'string') resolved[k] = { file: resolved[k], sha256: sha256(readFileSync(resolved[k] as string)) };
  return sha256(JSON.stringify({ tool: TOOL_VERSION, inputs, options: resolved, device }));
}
