// Maps llmopt's --device to an onnxruntime execution provider and turns "not available here" into a
// DeviceError with a hint, instead of a crash deep inside session creation.
import * as ort from 'onnxruntime-node';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DeviceError } from '../core/errors.js';

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
  if (device === 'cuda' && !existsSync(join(nativeDir(), 'libonnxruntime_providers_cuda.so')) && process.platform === 'linux') {
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
