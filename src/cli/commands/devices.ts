// `llmopt devices`: the execution providers and adapters of this machine — for WebGPU whether an adapter
// is found, whether it is a software one, shader-f16, the attention self-check; for CUDA the provider library.
import { Command } from 'commander';
import { listDevices, type DevicesReport } from '../../runtime/device.js';
import { describeAdapter, SELF_CHECK_TOLERANCE } from '../../runtime/webgpu-adapter.js';
import { Output, table } from '../output.js';

const yesNo = (b: boolean) => (b ? 'yes' : 'no');

/** The WebGPU rows of the human report. */
function webgpuRows(r: DevicesReport): Array<[string, string]> {
  const w = r.webgpu;
  if (!w) return [['webgpu', 'no WebGPU provider in this onnxruntime-node build']];
  const drivers = w.vulkanDrivers.map(
    (d) => `${d.library}${d.apiVersion ? ` (Vulkan ${d.apiVersion})` : ''}${d.software ? ', software' : ''}`,
  );
  const rows: Array<[string, string]> = [
    ['webgpu', w.adapter ? `adapter found: ${describeAdapter(w)}` : `no adapter (${w.failure ?? 'unknown'})`],
  ];
  if (w.warnings.length) rows.push(['  loader said', w.warnings.slice(0, 2).join('; ')]);
  rows.push(['  Vulkan drivers', drivers.length ? drivers.join('; ') : 'none found']);
  if (!w.adapter) return rows;
  rows.push(['  software adapter', yesNo(w.software)]);
  rows.push(['  shader-f16', w.shaderF16 ? 'yes' : `no (${w.f16Failure}): float16 weights are looked up on the CPU`]);
  const worst = Math.max(...w.gqa.map((c) => c.maxDiff));
  rows.push([
    '  attention self-check',
    w.gqaCorrect
      ? `GroupQueryAttention agrees with the CPU (max |diff| ${worst.toPrecision(2)})`
      : `GroupQueryAttention FAILS (max |diff| ${worst.toPrecision(2)} > ${SELF_CHECK_TOLERANCE}): fused graphs run it on the CPU`,
  ]);
  rows.push(['  probed', w.cached ? 'earlier (cached per adapter; --refresh probes again)' : 'now']);
  const d = w.details;
  if (!d || 'unavailable' in d) {
    rows.push(['  vendor, architecture, subgroups, limits', `unknown: ${d?.unavailable ?? 'not probed'} (onnxruntime-node exposes none)`]);
    return rows;
  }
  rows.push([
    '  vendor, architecture',
    `${d.vendor} ${d.architecture} (${d.description || d.device})${d.fallback ? ', fallback adapter' : ''}`,
  ]);
  rows.push(['  subgroup sizes', d.subgroupMinSize === null ? 'unknown' : `${d.subgroupMinSize}-${d.subgroupMaxSize}`]);
  rows.push([
    '  limits',
    Object.entries(d.limits)
      .map(([k, v]) => `${k} ${v}`)
      .join(', '),
  ]);
  return rows;
}

export function devicesCommand(): Command {
  return new Command('devices')
    .description('list execution providers and adapters: WebGPU adapter, shader-f16, attention self-check; CUDA provider library')
    .option('--refresh', 'probe the WebGPU adapter again instead of using the cached result')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', '\nExample:\n  $ llmopt devices\n  $ llmopt devices --json --refresh')
    .action(async (o: { refresh?: boolean; json?: boolean }) => {
      const out = new Output({ json: o.json });
      const r = await listDevices({ refresh: o.refresh });
      if (o.json) return out.json(r);
      const gpus = r.gpus.map((g) => `${g.vendor} ${g.deviceId} (${g.card})`).join(', ');
      const cuda = r.cuda.installed
        ? `provider installed (${r.cuda.library})`
        : `provider not installed (no ${r.cuda.library}); see the README, "GPU: the CUDA provider"`;
      out.result(
        table([
          ['onnxruntime-node', `${r.onnxruntime}: providers ${r.providers.join(', ')}`],
          ['GPUs (PCI)', gpus || 'none found'],
          ['cpu', 'available'],
          ...webgpuRows(r),
          ['cuda', cuda],
        ]),
      );
    });
}
