// writeOutputDir: a failed write leaves nothing, and temporary folders of processes that no longer run
// are removed by the next write into the same parent, while those of running processes stay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { writeOutputDir } from '../../src/formats/output-dir.js';
import { tempDir } from '../support.js';

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  return r.pid!;
}

test('the next write removes temp folders of dead pids and keeps those of live ones', async () => {
  const parent = tempDir();
  const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  try {
    const dead = deadPid();
    const stale = [`.model.tmp-${dead}-abc123`, `.other.tmp-${dead}-x9.old`];
    const live = [`.model.tmp-${sleeper.pid}-abc123`, `.model.tmp-${process.pid}-zz`];
    for (const name of [...stale, ...live]) {
      mkdirSync(join(parent, name));
      writeFileSync(join(parent, name, 'model.onnx.data'), 'partial');
    }
    mkdirSync(join(parent, '.notes.tmp-dir')); // not an llmopt temp name: never touched
    await writeOutputDir(join(parent, 'out'), async (tmp) => writeFileSync(join(tmp, 'llmopt.json'), '{}'));
    assert.deepEqual(readdirSync(parent).sort(), ['.notes.tmp-dir', ...live, 'out'].sort());
  } finally {
    sleeper.kill('SIGKILL');
  }
});

test('a failed write leaves no output and no temp folder', async () => {
  const parent = tempDir();
  await assert.rejects(
    writeOutputDir(join(parent, 'out'), async (tmp) => {
      writeFileSync(join(tmp, 'model.onnx'), 'half');
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.deepEqual(readdirSync(parent), []);
});
