// Every artifact the golden cases write is byte-identical to what the reference code wrote
// (hashes in artifact-hashes.json, recorded by scripts/record-artifact-hashes.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GOLDEN_CASES, hashFolder } from './cases.js';
import { NEEDS_SHARED, ROOT, runCli, tempDir } from '../support.js';

const golden: Record<string, Record<string, string>> = JSON.parse(
  readFileSync(join(ROOT, 'test', 'golden', 'artifact-hashes.json'), 'utf8'),
);

for (const c of GOLDEN_CASES) {
  test(`byte-identical output: ${c.name}`, { skip: c.shared ? NEEDS_SHARED : undefined }, () => {
    const out = join(tempDir(), c.name);
    const r = runCli(c.args(out));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(hashFolder(out), golden[c.name]);
  });
}
