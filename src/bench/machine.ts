// The machine a benchmark ran on, recorded beside every figure (figures from different machines do not compare).
import { createRequire } from 'node:module';
import { cpus, totalmem } from 'node:os';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  onnxruntime: string;
  device: string;
}

export function machineInfo(device: string): Machine {
  // The version from the package itself: only src/runtime imports onnxruntime-node.
  const onnxruntime = (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    onnxruntime,
    device,
  };
}

export function describeMachine(m: Machine): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, node ${m.node}, onnxruntime ${m.onnxruntime}, ${m.device}`;
}

/** The process's peak resident memory so far, in MiB. */
export const peakRssMiB = () => process.resourceUsage().maxRSS / 1024;
