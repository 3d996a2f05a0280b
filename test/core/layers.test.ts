// The floors of src/ import only downward: cli > (recipes, serve) > passes > (eval, bench) > runtime > model > formats > core.
// eval and bench share a floor and import neither each other (none does): both sit on the runtime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { ROOT } from '../support.js';

const FLOORS: Record<string, number> = {
  core: 0,
  formats: 1,
  model: 2,
  runtime: 3,
  eval: 4,
  bench: 4,
  passes: 5,
  recipes: 6,
  serve: 6,
  cli: 7,
};

/** Known upward imports, as `file -> specifier` (none: eval's reference export goes through model/artifact-writer.ts). */
const ALLOWED = new Set<string>();

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Relative module specifiers of a file: static imports, re-exports and dynamic import(). */
function relativeImports(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+'([^']+)'/gm)) found.push(m[1]!);
  for (const m of text.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)) found.push(m[1]!);
  return found.filter((s) => s.startsWith('.'));
}

const floorOf = (src: string, file: string) => relative(src, file).split(sep)[0]!;

test('every import in src/ points to its own floor or one below', () => {
  const src = join(ROOT, 'src');
  const upward: string[] = [];
  for (const file of sourceFiles(src)) {
    const from = floorOf(src, file);
    assert.ok(from in FLOORS, `${relative(ROOT, file)}: ${from}/ is not a known floor; add it to FLOORS in test/core/layers.test.ts`);
    for (const spec of relativeImports(readFileSync(file, 'utf8'))) {
      const to = floorOf(src, resolve(dirname(file), spec));
      if (to === from) continue;
      const entry = `${relative(ROOT, file).split(sep).join('/')} -> ${spec}`;
      if (FLOORS[to]! >= FLOORS[from]! && !ALLOWED.has(entry)) upward.push(`${entry} (${from}/ imports ${to}/)`);
    }
  }
  assert.deepEqual(upward, [], `imports that point up or sideways:\n${upward.join('\n')}`);
});

test('the allow-list names only imports that still exist', () => {
  for (const entry of ALLOWED) {
    const [file, spec] = entry.split(' -> ') as [string, string];
    assert.ok(relativeImports(readFileSync(join(ROOT, file), 'utf8')).includes(spec), `${entry} is gone: remove it from ALLOWED`);
  }
});
