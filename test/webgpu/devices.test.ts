// `llmopt devices`: the providers and adapters of this machine, as text and JSON. On SwiftShader the probe
// must find a software adapter without shader-f16 whose GroupQueryAttention fails the self-check (the fault
// scripts/repro-gqa-webgpu.ts reproduces); with an empty driver manifest, no adapter and the loader's reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../support.js';
import { emptyIcd, NEEDS_WEBGPU, ON_SWIFTSHADER, runCliWebGpu, webgpuEnv } from './support.js';

test('devices --json: providers, the CUDA library, and the WebGPU report, anywhere', () => {
  const r = runCli(['devices', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.ok(report.providers.includes('cpu'));
  assert.equal(typeof report.cuda.installed, 'boolean');
  assert.match(report.cuda.library, /libonnxruntime_providers_cuda\.so$/);
  if (report.webgpu) assert.equal(typeof report.webgpu.adapter, 'boolean');
});

test('devices on SwiftShader: a software adapter, no shader-f16, the GroupQueryAttention self-check failing', {
  skip: NEEDS_WEBGPU,
}, () => {
  const r = runCliWebGpu(['devices', '--json', '--refresh']);
  assert.equal(r.code, 0, r.stderr);
  const w = JSON.parse(r.stdout).webgpu;
  assert.equal(w.adapter, true, w.failure);
  assert.equal(w.cached, false, '--refresh probes again');
  assert.ok(w.gqa.length >= 1);
  if (ON_SWIFTSHADER) {
    assert.equal(w.software, true);
    assert.match(w.vulkanDrivers[0].library, /libvk_swiftshader\.so$/);
    assert.equal(w.shaderF16, false);
    assert.match(w.f16Failure, /requires f16/);
    assert.equal(w.gqaCorrect, false, 'onnxruntime 1.30 on subgroups of 4 (microsoft/onnxruntime#26064); if this fails, recheck the fault');
    assert.ok(w.gqa[0].maxDiff > 1e-4);
    // The adapter's own description, from Dawn's Node binding (the optional webgpu package) when installed.
    if (!('unavailable' in w.details)) {
      assert.deepEqual([w.details.vendor, w.details.architecture, w.details.fallback], ['google', 'swiftshader', true]);
      assert.deepEqual([w.details.subgroupMinSize, w.details.subgroupMaxSize, w.details.shaderF16], [4, 4, false]);
      assert.ok(w.details.limits.maxComputeInvocationsPerWorkgroup >= 256);
    } else assert.match(w.details.unavailable, /optional 'webgpu' package/);
  }
  const text = runCliWebGpu(['devices']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^webgpu +adapter found: /m);
  assert.match(text.stdout, /attention self-check/);
  assert.match(text.stdout, /probed +earlier \(cached per adapter/);
  assert.match(text.stdout, /subgroup sizes +4-4|vendor, architecture, subgroups, limits +unknown/);
});

test('devices with an empty Vulkan driver manifest: no adapter, and the loader says why', { skip: NEEDS_WEBGPU }, () => {
  const r = runCliWebGpu(['devices', '--json'], webgpuEnv(emptyIcd()));
  assert.equal(r.code, 0, r.stderr);
  const w = JSON.parse(r.stdout).webgpu;
  assert.equal(w.adapter, false);
  assert.ok(
    w.warnings.some((l: string) => /Found no drivers/.test(l)),
    w.warnings.join('\n'),
  );
  assert.match(w.failure, /No supported adapters/);
});
