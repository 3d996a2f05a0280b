// Maps llmopt's --device to an onnxruntime execution provider and turns "not available here" into a
// DeviceError with a hint, instead of a crash deep inside session creation.
import * as ort from 'onnxruntime-node';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DeviceError } from '../core/errors.js';
import { existsSync as exists, readdirSync, readFileSync } from 'node:fs';
import { webgpuAdapter, type AdapterReport } from './webgpu-adapter.js';

export const DEVICES = ['cpu', 'webgpu', 'cuda'] as const;
export type Device = (typeof DEVICES)[number];

export function parseDevice(value: string): Device {
  if ((DEVICES as readonly string[]).includes(value)) return value as Device;
  throw new DeviceError(`--device ${value}: unknown device (choose one of ${DEVICES.join(', ')})`);
}

const HINTS: Record<Device, string> = {
  cpu: '',
  webgpu:
    'the WebGPU provider needs a GPU adapter reachable through Vulkan (Linux), Metal or D3D12; ' +
    'check that a Vulkan loader and GPU driver are installed',
  cuda: 'install the CUDA provider: see the README section "GPU: the CUDA provider"',
};

/** Execution providers for a device; throws DeviceError when this onnxruntime build lacks it. */
export function executionProviders(device: Device): string[] {
  if (device === 'cpu') return ['cpu'];
  const backends = ort.listSupportedBackends();
  const entry = backends.find((b) => b.name === device);
  if (!entry) throw new DeviceError(`--device ${device}: this onnxruntime-node build has no ${device} provider; ${HINTS[device]}`);
  // The CUDA provider is a separate library that onnxruntime-node's install step downloads (skipped here by .npmrc).
  if (device === 'cuda' && !exists(join(nativeDir(), 'libonnxruntime_providers_cuda.so')) && process.platform === 'linux') {
    throw new DeviceError(
      `--device cuda: the CUDA provider is not installed (${nativeDir()} has no libonnxruntime_providers_cuda.so); ${HINTS.cuda}`,
    );
  }
  return [device];
}

/** Folder holding onnxruntime-node's native libraries for this platform. */
function nativeDir(): string {
  const pkg = createRequire(import.meta.url).resolve('onnxruntime-node/package.json');
  return join(dirname(pkg), 'bin', 'napi-v6', process.platform, process.arch);
}

/** Rewrites a provider failure from onnxruntime into a one-line DeviceError. */
export function deviceFailure(device: Device, error: unknown): DeviceError {
  // onnxruntime prefixes messages with its source location and check expression; keep the reason.
  const first = String((error as Error)?.message ?? error)
    .split('\n')[0]!
    .split(/ was false\. | : FAIL : /)
    .pop();
  return new DeviceError(`--device ${device}: the ${device} execution provider could not start (${first}); ${HINTS[device]}`);
}

/** A GPU on the PCI bus (Linux sysfs), whatever drivers it has. */
export interface PciGpu {
  card: string;
  vendorId: string;
  vendor: string;
  deviceId: string;
}

/** What `llmopt devices` reports: each provider this onnxruntime-node build has and what it can reach. */
export interface DevicesReport {
  onnxruntime: string;
  providers: string[];
  gpus: PciGpu[];
  cpu: { available: true };
  /** null: this onnxruntime-node build has no WebGPU provider. */
  webgpu: AdapterReport | null;
  cuda: { provider: boolean; library: string; installed: boolean };
}

const PCI_VENDORS: Record<string, string> = {
  '0x10de': 'NVIDIA',
  '0x1002': 'AMD',
  '0x1022': 'AMD',
  '0x8086': 'Intel',
  '0x5143': 'Qualcomm',
};

/** Display-class PCI devices (class 0x03xxxx) from sysfs; empty off Linux. */
function pciGpus(): PciGpu[] {
  const drm = '/sys/class/drm';
  if (!exists(drm)) return [];
  const read = (card: string, f: string) => {
    const p = join(drm, card, 'device', f);
    return exists(p) ? readFileSync(p, 'utf8').trim() : '';
  };
  return readdirSync(drm)
    .filter((c) => /^card\d+$/.test(c) && read(c, 'class').startsWith('0x03'))
    .map((card) => ({
      card,
      vendorId: read(card, 'vendor'),
      vendor: PCI_VENDORS[read(card, 'vendor')] ?? 'unknown',
      deviceId: read(card, 'device'),
    }));
}

/** Lists the providers and devices of this machine; `refresh` probes the WebGPU adapter again instead of using the cache. */
export async function listDevices(opts: { refresh?: boolean } = {}): Promise<DevicesReport> {
  const providers = ort.listSupportedBackends().map((b) => b.name);
  const library = join(nativeDir(), 'libonnxruntime_providers_cuda.so');
  const onnxruntime = (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
  return {
    onnxruntime,
    providers,
    gpus: pciGpus(),
    cpu: { available: true },
    webgpu: providers.includes('webgpu') ? await webgpuAdapter({ fresh: opts.refresh }) : null,
    cuda: { provider: providers.includes('cuda'), library, installed: exists(library) },
  };
}
