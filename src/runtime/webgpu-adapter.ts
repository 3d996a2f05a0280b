// This machine's WebGPU adapter as llmopt knows it: what the probe child found (adapter, shader-f16, the
// GroupQueryAttention self-check) plus the Vulkan drivers it sits on, cached per adapter on disk.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TOOL_VERSION } from '../formats/artifact.js';
import type { ProbeResult } from './webgpu-probe.js';

/** Largest |WebGPU - CPU| at which the attention self-check passes (the suite's logits tolerance). */
export const SELF_CHECK_TOLERANCE = 1e-4;

/** A Vulkan driver (ICD) the loader can see: the layer Dawn's adapter sits on, on Linux. */
export interface VulkanDriver {
  manifest: string;
  library: string;
  apiVersion: string | null;
  /** A known CPU implementation (SwiftShader, lavapipe): no GPU behind it. */
  software: boolean;
}

export interface AdapterReport extends ProbeResult {
  /** Whether every self-check shape agreed with the CPU within SELF_CHECK_TOLERANCE. */
  gqaCorrect: boolean;
  /** Vulkan drivers visible to the loader (Linux; empty elsewhere). */
  vulkanDrivers: VulkanDriver[];
  /** Whether the adapter is a software one: every Vulkan driver the loader sees is a CPU implementation. */
  software: boolean;
  /** Dawn's and the Vulkan loader's own warnings during the probe (why no adapter was found, often). */
  warnings: string[];
  /** Whether this report came from the cache (the probe ran in an earlier process). */
  cached: boolean;
}

const SOFTWARE_DRIVERS: [RegExp, string][] = [
  [/swiftshader/i, 'SwiftShader'],
  [/lvp|lavapipe|llvmpipe/i, 'lavapipe (llvmpipe)'],
];

/** A software driver's name from its library, or null for a hardware driver. */
export function softwareDriverName(library: string): string | null {
  return SOFTWARE_DRIVERS.find(([re]) => re.test(library))?.[1] ?? null;
}

const ICD_DIRS = [
  '/etc/vulkan/icd.d',
  '/usr/local/share/vulkan/icd.d',
  '/usr/share/vulkan/icd.d',
  join(homedir(), '.local/share/vulkan/icd.d'),
];

/** The ICD manifests the Vulkan loader reads: VK_DRIVER_FILES / VK_ICD_FILENAMES when set, else the standard folders. */
function icdManifests(): string[] {
  const listed = process.env.VK_DRIVER_FILES || process.env.VK_ICD_FILENAMES;
  if (listed) return listed.split(':').filter(Boolean);
  if (process.platform !== 'linux') return [];
  return ICD_DIRS.filter(existsSync).flatMap((d) =>
    readdirSync(d)
      .filter((f) => f.endsWith('.json'))
      .map((f) => join(d, f)),
  );
}

/** The Vulkan drivers the loader can see, read from their manifests (unreadable ones are left out). */
export function vulkanDrivers(): VulkanDriver[] {
  const drivers: VulkanDriver[] = [];
  for (const manifest of icdManifests()) {
    try {
      const icd = (JSON.parse(readFileSync(manifest, 'utf8')) as { ICD?: { library_path?: string; api_version?: string } }).ICD;
      if (!icd?.library_path) continue;
      const library =
        isAbsolute(icd.library_path) || !icd.library_path.includes('/') ? icd.library_path : resolve(dirname(manifest), icd.library_path);
      drivers.push({ manifest, library, apiVersion: icd.api_version ?? null, software: softwareDriverName(library) !== null });
    } catch {
      // An unreadable manifest is one the loader skips as well.
    }
  }
  return drivers;
}

/**
 * What identifies the adapter a new process would get, for the cache: llmopt's version (its checks) and onnxruntime's (its kernels),
 * the loader's environment, the driver manifests and libraries (size and time), the GPUs in sysfs and
 * the NVIDIA driver version. A change in any of them probes again.
 */
function adapterFingerprint(): string {
  const parts: string[] = [process.platform, process.arch, TOOL_VERSION, onnxruntimeVersion()];
  for (const v of ['LD_LIBRARY_PATH', 'VK_ICD_FILENAMES', 'VK_DRIVER_FILES', 'DRI_PRIME']) parts.push(`${v}=${process.env[v] ?? ''}`);
  const stamp = (f: string) => {
    try {
      const s = statSync(f);
      return `${f}:${s.size}:${s.mtimeMs}`;
    } catch {
      return `${f}:-`;
    }
  };
  for (const d of vulkanDrivers()) parts.push(stamp(d.manifest), stamp(d.library));
  const drm = '/sys/class/drm';
  if (existsSync(drm)) {
    for (const card of readdirSync(drm).filter((c) => /^card\d+$/.test(c))) {
      for (const f of ['vendor', 'device']) {
        const p = join(drm, card, 'device', f);
        if (existsSync(p)) parts.push(`${card}/${f}=${readFileSync(p, 'utf8').trim()}`);
      }
    }
  }
  if (existsSync('/proc/driver/nvidia/version')) parts.push(readFileSync('/proc/driver/nvidia/version', 'utf8').split('\n')[0]!);
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 32);
}

function onnxruntimeVersion(): string {
  return (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
}

/** The cache folder: LLMOPT_CACHE_DIR, else $XDG_CACHE_HOME/llmopt, else ~/.cache/llmopt. */
export function cacheDir(): string {
  return process.env.LLMOPT_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'llmopt');
}

const cacheFile = () => join(cacheDir(), 'webgpu-adapters.json');

function readCache(): Record<string, ProbeResult & { warnings: string[] }> {
  try {
    return JSON.parse(readFileSync(cacheFile(), 'utf8'));
  } catch {
    return {};
  }
}

/** Adds one entry; a cache that cannot be written only costs a probe next time. */
function writeCache(key: string, entry: ProbeResult & { warnings: string[] }): void {
  try {
    mkdirSync(cacheDir(), { recursive: true });
    const tmp = `${cacheFile()}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ ...readCache(), [key]: entry }, null, 1)}\n`);
    renameSync(tmp, cacheFile());
  } catch {
    // Read-only home or cache folder: nothing to do.
  }
}

/** A child entry beside this file (webgpu-probe, webgpu-details), .ts under tsx (tests), .js in dist. */
function childEntry(name: string): string {
  const here = fileURLToPath(import.meta.url);
  return join(dirname(here), `${name}${extname(here)}`);
}

const PROBE_TIMEOUT_MS = 120_000;

/** What a child entry printed: its last stdout line parsed (null when none parses), its stderr, how it ended. */
interface ChildRun<T> {
  result: T | null;
  stderr: string;
  /** "exit code 1" or "killed by SIGKILL". */
  ended: string;
}

/** Runs a child entry (killed after PROBE_TIMEOUT_MS) and parses the JSON line it ends with. */
function runChild<T>(name: string): Promise<ChildRun<T>> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [...process.execArgv, childEntry(name)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), PROBE_TIMEOUT_MS);
    child.on('error', fail);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let result: T | null = null;
      try {
        result = JSON.parse(out.trim().split('\n').pop() ?? '') as T;
      } catch {
        // Reported through `ended`.
      }
      done({ result, stderr: err, ended: signal ? `killed by ${signal}` : `exit code ${code}` });
    });
  });
}

/** The adapter's description from Dawn's Node binding, in a child of its own; a failure is reported, not thrown. */
async function runDetails(): Promise<NonNullable<ProbeResult['details']>> {
  const run = await runChild<NonNullable<ProbeResult['details']>>('webgpu-details').catch((e: Error) => e);
  if (run instanceof Error) return { unavailable: run.message };
  return run.result ?? { unavailable: `the adapter description crashed (${run.ended})` };
}

/** Runs the probe child and collects its JSON line and its stderr warnings. */
async function runProbe(): Promise<ProbeResult & { warnings: string[] }> {
  const run = await runChild<ProbeResult>('webgpu-probe');
  const warnings = run.stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^Warning: /.test(l))
    .map((l) => l.replace(/^Warning: /, ''));
  if (run.result) return { ...run.result, warnings };
  const last = run.stderr.trim().split('\n').filter(Boolean).pop() ?? '';
  const failure = `the WebGPU probe crashed (${run.ended}${last ? `: ${last}` : ''})`;
  return { adapter: false, shaderF16: false, gqa: [], failure, warnings };
}

let current: Promise<AdapterReport> | null = null;

/**
 * The adapter a WebGPU session in this process gets (onnxruntime opens one device per process), probed
 * once per adapter and kept on disk; `fresh` probes again regardless of the cache.
 */
export function webgpuAdapter(opts: { fresh?: boolean } = {}): Promise<AdapterReport> {
  if (current && !opts.fresh) return current;
  current = (async () => {
    const key = adapterFingerprint();
    const hit = opts.fresh ? undefined : readCache()[key];
    const found = hit ?? (await runProbe());
    // The adapter's own description: with a new probe, or for an entry cached before it was read.
    const described = found.adapter && found.details === undefined;
    if (described) found.details = await runDetails();
    // Only a probe that reached a verdict is worth keeping; a crash or missing adapter probes again.
    if ((!hit || described) && found.adapter) writeCache(key, found);
    const drivers = vulkanDrivers();
    return {
      ...found,
      gqaCorrect: found.gqa.length > 0 && found.gqa.every((c) => c.maxDiff <= SELF_CHECK_TOLERANCE),
      vulkanDrivers: drivers,
      software: drivers.length > 0 && drivers.every((d) => d.software),
      cached: hit !== undefined,
    };
  })();
  return current;
}

/** The adapter in words for reports: "SwiftShader (software)" or "Vulkan: libnvidia..." or "WebGPU". */
export function describeAdapter(r: AdapterReport): string {
  if (r.software) {
    const names = [...new Set(r.vulkanDrivers.map((d) => softwareDriverName(d.library)))];
    return `${names.join(', ')} (software adapter)`;
  }
  const libs = r.vulkanDrivers.map((d) => d.library.split('/').pop()).join(', ');
  return libs ? `Vulkan ${libs}` : 'WebGPU adapter';
}
