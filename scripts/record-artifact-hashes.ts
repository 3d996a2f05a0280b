// Records the sha256 of every artifact the golden cases write (test/golden/artifact-hashes.json):
// run once on the code whose output is the reference, before a refactor that must not change it.
// Named cases (arguments) re-record only those, keeping the others' hashes: for a change meant to alter one output.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GOLDEN_CASES, hashFolder } from '../test/golden/cases.js';
import { NEEDS_SHARED, ROOT, runCli, tempDir } from '../test/support.js';

const file = join(ROOT, 'test', 'golden', 'artifact-hashes.json');
const only = process.argv.slice(2);
const unknown = only.filter((n) => !GOLDEN_CASES.some((c) => c.name === n));
if (unknown.length > 0) throw new Error(`no golden case named ${unknown.join(', ')}`);
const hashes: Record<string, Record<string, string>> = only.length > 0 && existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
for (const c of GOLDEN_CASES) {
  if (only.length > 0 && !only.includes(c.name)) continue;
  if (c.shared && NEEDS_SHARED) throw new Error(NEEDS_SHARED);
  const out = join(tempDir(), c.name);
  const r = runCli(c.args(out));
  if (r.code !== 0) throw new Error(`${c.name}: exit ${r.code}: ${r.stderr}`);
  hashes[c.name] = hashFolder(out);
  process.stderr.write(`${c.name}: ${Object.keys(hashes[c.name]!).length} files\n`);
}
// Keep the cases' order, whatever was re-recorded.
const ordered = Object.fromEntries(GOLDEN_CASES.filter((c) => hashes[c.name]).map((c) => [c.name, hashes[c.name]]));
writeFileSync(file, `${JSON.stringify(ordered, null, 2)}\n`);
