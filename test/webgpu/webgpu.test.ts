// WebGPU equal to the CPU, the subset `npm test` runs on SwiftShader (a software Vulkan from ../shared):
// the two routed paths (fused attention with GroupQueryAttention kept on the CPU, float16 weights without
// shader-f16) through llmopt's runtime in one child process, and `bench` on WebGPU.
// The whole matrix (every form, precision and model) is `npm run test:webgpu` (test/webgpu/matrix.suite.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, NEEDS_SHARED, tempDir } from '../support.js';
import { artifact, fastMatrix, judge, specOf } from './matrix.js';
import { NEEDS_WEBGPU, ON_SWIFTSHADER, runChecks, runCliWebGpu } from './support.js';

const skip = NEEDS_WEBGPU ?? NEEDS_SHARED;

test('WebGPU equals the CPU: fused fp16 aidreams-260k past 32 tokens, padded batch, cached decoding, greedy ids', {
  skip,
}, () => {
  const cases = fastMatrix();
  const results = runChecks(cases.map(specOf));
  for (const [i, c] of cases.entries()) judge(c, results[i]!);
  if (ON_SWIFTSHADER) {
    // SwiftShader's known faults (subgroups of 4, no shader-f16) must have been routed around, not missed.
    assert.match(results[0]!.description, /GroupQueryAttention on the CPU/);
    assert.match(results[0]!.description, /float16 weights looked up and widened on the CPU/);
  }
});

test('bench runs on WebGPU and its report marks a software adapter', { skip }, () => {
  const out = join(tempDir(), 'bench.json');
  const dir = artifact(GQA, 'inplace', 'fp32');
  const r = runCliWebGpu(
    ['bench', dir, '--device', 'webgpu', '--batch', '1', '--prompt-len', '8', '--gen-len', '4', '--reps', '1'].concat([
      '--requests',
      '3',
      '--slots',
      '2',
      '--trace-input',
      '4-8',
      '--trace-output',
      '2-4',
      '--json',
      out,
      '-q',
    ]),
  );
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(readFileSync(out, 'utf8'));
  assert.equal(report.machine.device, 'webgpu');
  if (ON_SWIFTSHADER) assert.match(report.artifacts[0].description, /webgpu: SwiftShader \(software adapter\)/);
  assert.ok(report.batching.length > 0 && report.serving.length > 0, 'static and continuous batching figures');
});
