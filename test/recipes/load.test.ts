// Reading and validating recipes, with no stage run: every shipped recipe is valid; unknown keys, wrong
// types, impossible orders, gates without a figure and missing calibration data are InputErrors that
// name the file, the stage and the key; --set values are YAML scalars; paths are relative to the recipe.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InputError } from '../../src/core/errors.js';
import { findRecipe, loadRecipe, shippedRecipes } from '../../src/recipes/load.js';
import { checkRecipe } from '../../src/recipes/checks.js';
import { stageHash } from '../../src/recipes/hash.js';
import { GQA, MHA, SAMPLE_TEXT, tempDir } from '../support.js';

const SHIPPED = ['draft-for-speculative', 'int4-gptq', 'int8', 'qat-int4', 'quickstart', 'sparse24-distill-int4', 'tp2'];

function recipe(yaml: string, name = 'r.yaml'): string {
  const file = join(tempDir(), name);
  writeFileSync(file, yaml);
  return file;
}

/** Loads and checks a recipe against MHA; returns the InputError's message. */
function refusal(yaml: string, sets: string[] = []): string {
  const file = recipe(yaml);
  try {
    checkRecipe(loadRecipe(file, sets), MHA);
  } catch (e) {
    assert.ok(e instanceof InputError, String(e));
    assert.ok(e.message.startsWith(`${file}: `) || e.message.startsWith('--set'), e.message);
    assert.equal(e.message.split('\n').length, 1, e.message);
    return e.message.slice(file.length + 2);
  }
  assert.fail(`accepted:\n${yaml}`);
}

test('every shipped recipe loads and passes the cross-stage checks on the fixtures', () => {
  assert.deepEqual(shippedRecipes(), SHIPPED);
  for (const name of SHIPPED) {
    const r = loadRecipe(findRecipe(name));
    assert.equal(r.name, name);
    const planned = checkRecipe(r, name === 'tp2' ? GQA : MHA);
    assert.equal(planned.length, r.stages.length);
    assert.ok(r.stages.every((s, i) => s.dir === `${String(i + 1).padStart(2, '0')}-${s.options.pass}`));
  }
  const q = loadRecipe(findRecipe('quickstart'));
  assert.equal(q.model, MHA);
  assert.deepEqual(
    q.stages.map((s) => s.options.pass),
    ['prune', 'distill', 'quantize', 'eval', 'bench'],
  );
});

test('defaults are filled in, the recipe data stands in for true, paths resolve against the recipe file', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'train.txt'), 'hello world\n');
  const file = join(dir, 'r.yaml');
  writeFileSync(
    file,
    'data: train.txt\nstages:\n  - pass: prune\n    sparsity: "2:4"\n    method: wanda\n  - pass: quantize\n    to: int4\n    eval: true\n',
  );
  const r = loadRecipe(file);
  const [prune, quantize] = r.stages.map((s) => s.options as Record<string, unknown>);
  assert.equal(prune!.calib, join(dir, 'train.txt'), 'a calibrated method reads the recipe data');
  assert.equal(prune!.calib_samples, 128);
  assert.equal(quantize!.block_size, 32);
  assert.equal(quantize!.eval, join(dir, 'train.txt'));
  assert.equal(r.name, 'r');
});

test('--set: values are YAML scalars, nested keys reach a gate, files are relative to the working folder', () => {
  const file = recipe(`stages:\n  - pass: quantize\n    to: int8\n  - name: check\n    pass: eval\n    data: ${SAMPLE_TEXT}\n`);
  const r = loadRecipe(file, [
    'quantize.to=int4',
    'quantize.block_size=64',
    'quantize.asymmetric=true',
    '2.gate.max_kl=0.5',
    'check.data=fixtures/text/sample.txt',
  ]);
  const q = r.stages[0]!.options as Record<string, unknown>;
  assert.equal(q.to, 'int4');
  assert.equal(q.block_size, 64);
  assert.equal(q.asymmetric, true);
  assert.deepEqual(r.stages[1]!.options.gate, { max_kl: 0.5 });
  assert.equal((r.stages[1]!.options as Record<string, unknown>).data, resolve('fixtures/text/sample.txt'));
});

test('bad recipes name the stage and the key', () => {
  const q = 'stages:\n  - pass: quantize\n    to: int4\n';
  const cases: Array<[string, string[], RegExp]> = [
    [`${q}    blocksize: 64\n`, [], /^stage 1 \(quantize\): blocksize: unknown key \(known keys: .*block_size/],
    [`${q}    block_size: "64"\n`, [], /^stage 1 \(quantize\): block_size: expected number, received string$/],
    [`${q}    block_size: 48\n`, [], /^stage 1 \(quantize\): block_size 48: choose one of 16, 32, 64, 128$/],
    [`${q}    gate: { max_kl: 0.1, max_typo: 1 }\n`, [], /^stage 1 \(quantize\): gate.max_typo: unknown key$/],
    [`${q}    gate: { max_kl: 0.1 }\n`, [], /^stage 1 \(quantize\): gate.max_kl: quantize produces no KL figure here; set eval: true/],
    [
      `stages:\n  - pass: export\n  - pass: eval\n    data: ${SAMPLE_TEXT}\n    gate: { min_tokens_per_s: 5 }\n`,
      [],
      /^stage 2 \(eval\): gate.min_tokens_per_s: eval produces no tokens\/s \(only bench measures it\)/,
    ],
    ['stages:\n  - pass: frobnicate\n', [], /^stage 1: pass: unknown pass "frobnicate" \(choose one of prune, distill/],
    ['stages:\n  - to: int4\n', [], /^stage 1: pass: missing/],
    ['stages: []\n', [], /^stages: a recipe needs at least one stage$/],
    ['stage:\n  - pass: export\n', [], /^stage: unknown key \(known keys: name, description, model, data, device, stages\)$/],
    ['name: x\n', [], /^stages: missing \(expected array\)$/],
    [
      `${q}  - pass: prune\n    sparsity: "2:4"\n`,
      [],
      /^stage 2 \(prune\): pass: prune cannot follow quantize: stage 1 \(quantize\) writes an int4 ONNX artifact/,
    ],
    [
      `stages:\n  - pass: export\n  - pass: distill\n    data: ${SAMPLE_TEXT}\n`,
      [],
      /^stage 2 \(distill\): pass: distill cannot follow export: stage 1 \(export\) writes a float32 ONNX artifact/,
    ],
    [
      `${q}  - pass: distill\n    data: ${SAMPLE_TEXT}\n`,
      [],
      /^stage 2 \(distill\): pass: distill cannot follow quantize: stage 1 \(quantize\) writes an int4 ONNX artifact/,
    ],
    [
      'stages:\n  - pass: bench\n',
      [],
      /^stage 1 \(bench\): pass: the source .* is a float Hugging Face folder, which bench cannot read; bench runs an ONNX artifact/,
    ],
    [
      `${q}    method: gptq\n`,
      [],
      /^stage 1 \(quantize\): calib: missing calibration data: give calib: <file> here, or data: <file> at the top/,
    ],
    [
      'stages:\n  - pass: prune\n    sparsity: "2:4"\n    method: sparsegpt\n    calib: nowhere.txt\n',
      [],
      /^stage 1 \(prune\): calib: .*nowhere.txt: file not found$/,
    ],
    ['stages:\n  - pass: prune\n    sparsity: "3:2"\n', [], /^stage 1 \(prune\): sparsity 3:2: N:M needs 1 <= N < M/],
    ['stages:\n  - pass: export\n  - pass: bench\n    draft: nothere\n', [], /^stage 2 \(bench\): draft: no stage named "nothere"/],
    [
      'stages:\n  - pass: export\n    input: later\n  - name: later\n    pass: export\n',
      [],
      /^stage 1 \(export\): input: "later" is a later stage or writes no model/,
    ],
    [
      'stages:\n  - pass: export\n  - pass: export\n',
      [],
      /^stage 2 \(export\): name: stage 1 has the same name; give one of them a name: key$/,
    ],
    [
      q,
      ['quantize.to=int3'],
      /^stage 1 \(quantize\): to: Invalid option: expected one of "fp16"\|"int8"\|"int4"\|"w8a8"\|"f32"\|"f16"\|"bf16"\|"q8_0"\|.*\|"q5_k_m"$/,
    ],
  ];
  for (const [yaml, sets, re] of cases) assert.match(refusal(yaml, sets), re, yaml);
  assert.throws(() => loadRecipe(recipe(q), ['nope.to=int8']), /--set nope.to=int8: .* has no stage "nope" \(stages: quantize\)/);
  assert.throws(() => loadRecipe(recipe(q), ['quantize']), /--set quantize: expected stage.key=value/);
});

test('a missing, unreadable or non-YAML recipe is one clear line', () => {
  assert.throws(
    () => findRecipe('no-such-recipe'),
    /no-such-recipe: recipe not found \(neither a file nor a shipped recipe: draft-for-speculative, /,
  );
  assert.throws(() => findRecipe(tempDir()), /is a folder; give a recipe file/);
  assert.throws(
    () => loadRecipe(recipe('stages:\n  - pass: export\n  attention: [fused\n')),
    (e: Error) => e instanceof InputError && /: invalid YAML: [^\n]+$/.test(e.message),
  );
  assert.throws(() => loadRecipe(recipe('- pass: export\n')), /a recipe is a YAML mapping with a stages: list/);
  assert.throws(() => loadRecipe(join(tempDir(), 'gone.yaml')), /gone.yaml: recipe not found$/);
  assert.throws(() => loadRecipe(tempDir()), /: cannot read the recipe \(EISDIR\)$/);
});

test('the stage hash follows inputs, options and text content, not gates', () => {
  const dir = tempDir();
  const data = join(dir, 'a.txt');
  writeFileSync(data, 'one\n');
  const file = recipe(`stages:\n  - pass: eval\n    data: ${data}\n`);
  const opts = (sets: string[] = []) => loadRecipe(file, sets).stages[0]!.options;
  const h = stageHash({ input: 'x' }, opts(), 'cpu');
  assert.equal(stageHash({ input: 'x' }, opts(['eval.gate.max_kl=1']), 'cpu'), h, 'a gate re-runs nothing');
  assert.notEqual(stageHash({ input: 'y' }, opts(), 'cpu'), h);
  assert.notEqual(stageHash({ input: 'x' }, opts(['eval.limit=2']), 'cpu'), h);
  writeFileSync(data, 'two\n');
  assert.notEqual(stageHash({ input: 'x' }, opts(), 'cpu'), h, 'the text file by content');
});
