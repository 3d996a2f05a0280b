// Records the sha256 of every artifact the golden cases write (test/golden/artifact-hashes.json):
// run once on the code whose output is the reference, before a refactor that must not change it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GOLDEN_CASES, hashFolder } from '../test/golden/cases.js';
import { NEEDS_SHARED, ROOT, runCli, tempDir } from '../test/support.js';

const hashes: Record<string, Record<string, string>> = {};
for (const c of GOLDEN_CASES) {
  if (c.shared && NEEDS_SHARED) throw new Error(NEEDS_SHARED);
  const out = join(tempDir(), c.name);
  const r = runCli(c.args(out));
  if (r.code !== 0) throw new Error(`${c.name}: exit ${r.code}: ${r.stderr}`);
  hashes[c.name] = hashFolder(out);
  process.stderr.write(`${c.name}: ${Object.keys(hashes[c.name]!).length} files\n`);
}
writeFileSync(join(ROOT, 'test', 'golden', 'artifact-hashes.json'), `${JSON.stringify(hashes, null, 2)}\n`);
