// The style rules of the tree: no line over 140 characters in any .ts file under src/,
// and `biome check .` (formatter and linter, configured in biome.json) passes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT } from './support.js';

const MAX_LINE = 140;

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return tsFiles(path);
    return e.isFile() && e.name.endsWith('.ts') ? [path] : [];
  });
}

test(`no line in src/ is over ${MAX_LINE} characters`, () => {
  const long: string[] = [];
  for (const file of tsFiles(join(ROOT, 'src'))) {
    readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (line.length > MAX_LINE) long.push(`${relative(ROOT, file)}:${i + 1}: ${line.length} characters`);
      });
  }
  assert.deepEqual(long, [], `lines over ${MAX_LINE} characters:\n${long.join('\n')}`);
});

test('biome check . passes', () => {
  const r = spawnSync(join(ROOT, 'node_modules', '.bin', 'biome'), ['check', '.'], { cwd: ROOT, encoding: 'utf8' });
  assert.ifError(r.error);
  assert.equal(r.status, 0, `biome check . exited ${r.status}:\n${r.stdout}${r.stderr}`);
});
