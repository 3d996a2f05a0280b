// Bad input on the GPU paths: --device webgpu with no adapter (the loader pointed at an empty driver
// manifest), with an adapter lacking a feature the artifact needs (a graph computing in float16 without
// shader-f16), and --device cuda without the provider: one line naming what is missing, exit 2, nothing written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { MHA, exportedArtifact, runCli, tempDir } from '../support.js';
import { emptyIcd, NEEDS_WEBGPU, ON_SWIFTSHADER, runCliWebGpu, webgpuEnv, type Ran } from './support.js';

const { onnx } = onnxProto;

/** A bench run that would write `out`. */
const benchArgs = (dir: string, device: string, out: string) => [
  'bench',
  dir,
  '--device',
  device,
  '--batch',
  '1',
  '--prompt-len',
  '4',
  '--gen-len',
  '2',
  '--reps',
  '1',
  '--json',
  out,
  '-q',
];

function refused(r: Ran, out: string, pattern: RegExp): void {
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  assert.match(lines[0]!, pattern);
  assert.equal(r.stdout, '');
  assert.equal(existsSync(out), false, `${out} must not be written`);
}

test('--device webgpu with no adapter (empty Vulkan driver manifest): exit 2, one line, nothing written', {
  skip: NEEDS_WEBGPU,
}, async () => {
  const dir = await exportedArtifact(MHA, 'standard');
  const out = join(tempDir(), 'bench.json');
  const r = runCliWebGpu(benchArgs(dir, 'webgpu', out), webgpuEnv(emptyIcd()));
  refused(r, out, /^llmopt: --device webgpu: no WebGPU adapter found \(.*\); install a GPU driver .*, or run with --device cpu$/);
});

test('--device cuda without the CUDA provider library: exit 2, one line, nothing written', async (t) => {
  const r0 = runCli(['devices', '--json']);
  if (JSON.parse(r0.stdout).cuda.installed) return t.skip('the CUDA provider is installed here');
  const dir = await exportedArtifact(MHA, 'standard');
  const out = join(tempDir(), 'bench.json');
  refused(
    runCli(benchArgs(dir, 'cuda', out)),
    out,
    /^llmopt: --device cuda: the CUDA provider is not installed .*; install the CUDA provider/,
  );
});

/** A copy of `dir` whose graph computes its logits through a float16 multiply (as an all-fp16 model does). */
function withFloat16Compute(dir: string): string {
  const copy = join(tempDir(), 'f16-compute');
  cpSync(dir, copy, { recursive: true });
  const path = join(copy, 'model.onnx');
  const model = onnx.ModelProto.decode(readFileSync(path));
  const g = model.graph!;
  const last = g.node!.find((n) => n.output!.includes('logits'))!;
  last.output = last.output!.map((o) => (o === 'logits' ? 'logits/f32' : o));
  const one = new Uint16Array([0x3c00]);
  g.initializer!.push({ name: '/test/one_f16', dataType: 10, dims: [], rawData: new Uint8Array(one.buffer) });
  g.node!.push(
    { opType: 'Cast', name: '/test/ToF16', input: ['logits/f32'], output: ['logits/f16'], attribute: [{ name: 'to', type: 2, i: 10 }] },
    { opType: 'Mul', name: '/test/MulF16', input: ['logits/f16', '/test/one_f16'], output: ['logits/f16x'] },
    { opType: 'Cast', name: '/test/ToF32', input: ['logits/f16x'], output: ['logits'], attribute: [{ name: 'to', type: 2, i: 1 }] },
  );
  writeFileSync(path, onnx.ModelProto.encode(model).finish());
  return copy;
}

test('--device webgpu, a graph computing in float16, an adapter without shader-f16: exit 2, one line, nothing written', {
  skip: NEEDS_WEBGPU ?? (ON_SWIFTSHADER ? undefined : 'the system adapter may have shader-f16'),
}, async () => {
  const dir = withFloat16Compute(await exportedArtifact(MHA, 'standard'));
  const out = join(tempDir(), 'bench.json');
  const r = runCliWebGpu(benchArgs(dir, 'webgpu', out));
  refused(
    r,
    out,
    /^llmopt: --device webgpu: .*model\.onnx computes in float16 \(node \/test\/MulF16\) and this WebGPU adapter, .*, lacks the shader-f16 feature; run it with --device cpu, or use an fp32, int8 or int4 artifact$/,
  );
  // The same artifact runs on the CPU: the refusal is about the adapter, not the file.
  const ok = runCli(benchArgs(dir, 'cpu', out));
  assert.equal(ok.code, 0, ok.stderr);
});
