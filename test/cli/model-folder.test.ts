// The model-folder writer from the command line: a corrupt tokenizer.json is bad input (exit 2, one
// line naming the file, nothing written), and an export killed with SIGKILL leaves no output folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readdirSync, watch, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { AIDREAMS, GQA, NEEDS_SHARED, ROOT, SAMPLE_TEXT, runCli, tempDir } from '../support.js';

/** A copy of the gqa fixture whose tokenizer.json is `text`. */
function withTokenizer(text: string): string {
  const dir = join(tempDir(), 'model');
  cpSync(GQA, dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), text);
  return dir;
}

const CORRUPT = [
  { what: 'not JSON', text: '{"model": {"type": "BPE",', message: /tokenizer\.json: not valid JSON/ },
  {
    what: 'JSON the tokenizer library refuses',
    text: '{"version": "1.0", "model": {}}',
    message: /tokenizer\.json: cannot build the tokenizer/,
  },
];

const COMMANDS: Array<{ name: string; args: string[] }> = [
  { name: 'export', args: ['export'] },
  { name: 'quantize (onnx)', args: ['quantize', '--to', 'int8'] },
  {
    name: 'quantize (compressed-tensors)',
    // Groups of 16 at float16 (vLLM's Exllama); down_proj's 72 inputs take no group size vLLM serves.
    args: [
      'quantize',
      '--to',
      'int8',
      '--format',
      'compressed-tensors',
      '--block-size',
      '16',
      '--serve-dtype',
      'float16',
      '--exclude',
      '*down_proj',
    ],
  },
  { name: 'prune (magnitude)', args: ['prune', '--sparsity', '2:4'] },
  { name: 'prune (wanda)', args: ['prune', '--sparsity', '2:4', '--method', 'wanda', '--calib', SAMPLE_TEXT, '--calib-samples', '2'] },
];

for (const c of CORRUPT) {
  test(`a tokenizer.json that is ${c.what}: export, quantize and prune exit 2 naming it, nothing written`, () => {
    const model = withTokenizer(c.text);
    for (const cmd of COMMANDS) {
      const parent = tempDir();
      const [command, ...rest] = cmd.args;
      const r = runCli([command!, model, ...rest, '-o', join(parent, 'out')]);
      assert.equal(r.code, 2, `${cmd.name}: exit ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, c.message, cmd.name);
      assert.ok(r.stderr.includes(join(model, 'tokenizer.json')), `${cmd.name} names the file: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, `${cmd.name}: ${r.stderr}`);
      assert.deepEqual(readdirSync(parent), [], `${cmd.name}: nothing written`);
    }
  });
}

test('an export killed with SIGKILL mid-write leaves no output folder; the next write removes its temp folder', {
  skip: NEEDS_SHARED,
}, async () => {
  const parent = tempDir();
  const out = join(parent, 'out');
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'llmopt.js'), 'export', AIDREAMS, '-o', out, '-q'], { stdio: 'ignore' });
  const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
  // Killed as soon as its temporary folder appears, so the graph is still being written.
  const temp = `.out.tmp-${child.pid}-`;
  await new Promise<void>((done) => {
    const watcher = watch(parent, () => {
      if (readdirSync(parent).some((n) => n.startsWith(temp))) {
        watcher.close();
        child.kill('SIGKILL');
        done();
      }
    });
    child.on('exit', () => {
      watcher.close();
      done();
    });
  });
  const code = await exited;
  assert.equal(code, null, 'killed before it finished');
  assert.ok(!existsSync(out), 'no output folder');
  assert.ok(
    readdirSync(parent).some((n) => n.startsWith(temp)),
    'only the hidden temp folder is left',
  );

  const r = runCli(['export', AIDREAMS, '-o', join(parent, 'next'), '-q']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(readdirSync(parent), ['next'], "the dead export's temp folder is gone");
});
