// Bad input for quantize --method awq / awq+gptq and --clip: one line naming the option, exit code 2, nothing written
// (the built CLI, as a user runs it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { MHA, SAMPLE_TEXT, runCli, tempDir } from '../support.js';

function failsCleanly(args: string[], message: RegExp, out = 'out'): void {
  const parent = tempDir();
  const r = runCli([...args, '-o', join(parent, out)]);
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.deepEqual(readdirSync(parent), [], 'nothing written');
}

test('quantize: awq and awq+gptq without --calib or on a float target; --clip search on fp16, unknown --clip', () => {
  failsCleanly(['quantize', MHA, '--to', 'int4', '--method', 'awq'], /--method awq needs calibration text: give --calib/);
  failsCleanly(['quantize', MHA, '--to', 'int4', '--method', 'awq+gptq'], /--method awq\+gptq needs calibration text: give --calib/);
  failsCleanly(['quantize', MHA, '--to', 'fp16', '--method', 'awq', '--calib', SAMPLE_TEXT], /--method awq works with --to int4 or int8/);
  failsCleanly(['quantize', MHA, '--to', 'fp16', '--clip', 'search'], /--clip search works with --to int4 or int8/);
  failsCleanly(['quantize', MHA, '--to', 'int4', '--clip', 'mse'], /--clip mse: choose one of minmax, search/);
});

test('quantize --format gguf: awq without --calib or on a float type; the clip search on a float type', () => {
  const gguf = ['quantize', MHA, '--format', 'gguf', '--to', 'q4_0'];
  failsCleanly([...gguf, '--method', 'awq'], /--method awq needs calibration text: give --calib/, 'm.gguf');
  failsCleanly(
    ['quantize', MHA, '--format', 'gguf', '--to', 'f16', '--method', 'awq+gptq', '--calib', SAMPLE_TEXT],
    /--method awq\+gptq: --to f16 has no quantization grid/,
    'm.gguf',
  );
  failsCleanly(
    ['quantize', MHA, '--format', 'gguf', '--to', 'f16', '--clip', 'search'],
    /--clip search: --to f16 has no quantization grid/,
    'm.gguf',
  );
});
