// The WebGPU suite's environment: which adapter the child processes reach (SwiftShader from ../shared, or
// the machine's own with LLMOPT_TEST_WEBGPU=system), and running the checks child and the CLI with it.
// Dawn and the Vulkan loader read LD_LIBRARY_PATH and VK_ICD_FILENAMES when a process starts, so every
// WebGPU run here is a child process started with them: plain `npm test` needs no environment set.
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, SHARED, tempDir } from '../support.js';
import type { CheckResult, CheckSpec } from './checks.js';

export const SWIFTSHADER = join(SHARED, 'tools', 'swiftshader');
/** LLMOPT_TEST_WEBGPU=system: run on the machine's own adapter (a real GPU; scripts/gpu-check.sh sets it). */
export const ON_SYSTEM_ADAPTER = process.env.LLMOPT_TEST_WEBGPU === 'system';
/** Whether the adapter is SwiftShader (subgroups of 4, no shader-f16), whose known faults the tests expect. */
export const ON_SWIFTSHADER = !ON_SYSTEM_ADAPTER;

/** A skip message for node:test when no adapter is reachable (undefined when one is). */
export const NEEDS_WEBGPU =
  ON_SYSTEM_ADAPTER || existsSync(join(SWIFTSHADER, 'vk_swiftshader_icd.json'))
    ? undefined
    : `${SWIFTSHADER} is absent (and LLMOPT_TEST_WEBGPU is not "system"): the WebGPU tests are skipped`;

/**
 * The adapter probe's cache, shared by this run's children (and later runs: it is keyed by the adapter's
 * fingerprint, so a stale entry cannot be read). `llmopt devices --refresh` in devices.test.ts probes anew.
 */
export const PROBE_CACHE = join(tmpdir(), 'llmopt-test-webgpu-cache');

/** The environment a child needs to reach the adapter; `icd` overrides the Vulkan driver manifest. */
export function webgpuEnv(icd?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LLMOPT_CACHE_DIR: PROBE_CACHE };
  if (ON_SYSTEM_ADAPTER && !icd) return env;
  return {
    ...env,
    LD_LIBRARY_PATH: [SWIFTSHADER, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'),
    VK_ICD_FILENAMES: icd ?? join(SWIFTSHADER, 'vk_swiftshader_icd.json'),
    XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? tmpdir(),
  };
}

/** A Vulkan driver manifest that names no driver: the loader finds no adapter through it. */
export function emptyIcd(): string {
  const path = join(tempDir('llmopt-icd-'), 'empty_icd.json');
  writeFileSync(path, '{}\n');
  return path;
}

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** The built CLI with the WebGPU environment (or `env`). */
export function runCliWebGpu(args: string[], env: NodeJS.ProcessEnv = webgpuEnv()): Ran {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'llmopt.js'), ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 600_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs checks.ts in one child process (one WebGPU start for all specs) and returns its figures. */
export function runChecks(specs: CheckSpec[]): CheckResult[] {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'test', 'webgpu', 'checks.ts'), JSON.stringify(specs)], {
    cwd: ROOT,
    env: webgpuEnv(),
    encoding: 'utf8',
    timeout: 1_800_000,
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`checks child failed (status ${r.status}, signal ${r.signal}): ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as CheckResult[];
}

/** Logits, KL: the tolerances the issue sets for WebGPU against the CPU. */
export const LOGITS_TOLERANCE = 1e-4;
export const KL_TOLERANCE = 1e-5;
