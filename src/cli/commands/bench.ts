// `llmopt bench`: throughput and latency of one or more artifacts (static batching per batch size, a
// request trace under static and continuous batching, speculative decoding), as a table, JSON and SVG.
import { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { InputError } from '../../core/errors.js';
import { runBench, type BenchReport } from '../../bench/bench.js';
import { benchChart } from '../../bench/chart.js';
import { describeMachine } from '../../bench/machine.js';
import { formatStats, type Stats } from '../../bench/stats.js';
import type { Device } from '../../runtime/device.js';
import { deviceOptions, intOption, numberOption } from '../options.js';
import { Output, table } from '../output.js';

interface BenchCliOptions {
  batch?: number[];
  promptLen: number;
  genLen: number;
  prompt?: string;
  reps: number;
  requests?: number;
  arrivalRate: number;
  traceInput?: [number, number];
  traceOutput?: [number, number];
  slots?: number;
  seed: number;
  draft?: string;
  draftTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  device: Device;
  rankDevices?: Device[];
  threads?: number;
  json?: string;
  chart?: string;
  quiet?: boolean;
}

function batchList(value: string): number[] {
  return value.split(',').map((v) => {
    const n = Number(v.trim());
    if (v.trim() === '' || !Number.isInteger(n) || n < 1) throw new InputError(`--batch ${value}: batch size "${v}" is not a positive integer`);
    return n;
  });
}

function range(flag: string): (value: string) => [number, number] {
  return (value) => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(value.trim());
    const lo = Number(m?.[1]);
    const hi = Number(m?.[2] ?? m?.[1]);
    if (!m || lo < 1 || hi < lo) throw new InputError(`${flag} ${value}: expected a length or a range such as 16-128`);
    return [lo, hi];
  };
}

const f = formatStats;
const pct = (p: Record<'p50' | 'p95' | 'p99', Stats>) => `${p.p50.median.toFixed(1)} / ${p.p95.median.toFixed(1)} / ${p.p99.median.toFixed(1)}`;
const short = (path: string) => path.replace(/\/+$/, '').split('/').pop()!;

/** The report as readable tables, one per kind of measurement. */
function formatReport(r: BenchReport): string {
  const parts = [`machine: ${describeMachine(r.machine)}`];
  parts.push(...r.artifacts.map((a, i) => `[${i + 1}] ${a.path}: ${a.description}, ${a.layers} layers, hidden ${a.hidden}, vocab ${a.vocab}, context ${a.context}`));
  const many = r.artifacts.length > 1;
  if (r.batching.length) {
    parts.push('', `static batching, prompt ${r.settings.prompt ? 'text' : r.settings.promptLen}, generate ${r.settings.genLen}, ${r.settings.reps} reps: median (min-max)`);
    parts.push(
      table([
        ['artifact', 'batch', 'prefill tok/s', 'decode tok/s (all rows)', 'per sequence', `decode vs batch ${r.batching[0]!.scalingBase}`, 'TTFT ms', 'ITL ms p50 / p95 / p99', 'peak RSS MiB', ...(many ? ['decode vs [1]'] : [])],
        ...r.batching.map((b) => [short(b.artifact), b.batch, f(b.prefillTokensPerSecond, 0), f(b.decodeTokensPerSecond), f(b.perSequenceTokensPerSecond), f(b.decodeScaling, 2), f(b.timeToFirstTokenMs), pct(b.interTokenLatencyMs), b.peakRssMiB.toFixed(0), ...(many ? [f(b.decodeRatioToFirst, 2)] : [])]),
      ]),
    );
  }
  if (r.serving.length) {
    const t = r.settings.trace!;
    parts.push('', `request trace: ${t.requests} requests, ${t.arrivalRate}/s Poisson arrivals, prompts ${t.promptLen.join('-')}, outputs ${t.genLen.join('-')} tokens, ${t.slots} rows, seed ${t.seed}`);
    parts.push(
      table([
        ['artifact', 'policy', 'throughput tok/s', 'vs static', 'TTFT ms p50 / p95 / p99', 'ITL ms p50 / p95 / p99', 'end-to-end ms p50 / p95 / p99', ...(many ? ['throughput vs [1]'] : [])],
        ...r.serving.map((s) => [short(s.artifact), s.policy, f(s.throughput), f(s.throughputOverStatic, 2), pct(s.timeToFirstTokenMs), pct(s.interTokenLatencyMs), pct(s.endToEndMs), ...(many ? [f(s.throughputRatioToFirst, 2)] : [])]),
      ]),
    );
  }
  if (r.speculative.length) {
    parts.push('', `speculative decoding, batch 1, K = ${r.settings.draftTokens}, draft ${r.settings.draft}, ${r.settings.sampling.temperature > 0 ? `sampling at temperature ${r.settings.sampling.temperature}` : 'greedy'}`);
    parts.push(
      table([
        ['artifact', 'acceptance', 'tokens / target pass', 'decode tok/s alone', 'with draft', 'speedup', 'ms: target step / target pass / draft pass', 'same output'],
        ...r.speculative.map((s) => [short(s.artifact), f(s.acceptanceRate, 3), f(s.tokensPerTargetPass, 2), f(s.targetOnlyTokensPerSecond), f(s.speculativeTokensPerSecond), f(s.speedup, 2), `${s.targetStepMs.median.toFixed(1)} / ${s.targetPassMs.median.toFixed(1)} / ${s.draftPassMs.median.toFixed(1)}`, s.identical === null ? 'n/a (sampling)' : String(s.identical)]),
      ]),
    );
  }
  return parts.join('\n');
}

export function benchCommand(): Command {
  return deviceOptions(new Command('bench'), { rankDevices: true })
    .description('measure throughput and latency: static batching per batch size, continuous batching on a request trace, speculative decoding')
    .argument('<artifacts...>', 'artifact folders, measured alternately and compared with the first')
    .option('--batch <sizes>', 'comma-separated batch sizes for static batching (default 1,8 when nothing else is asked)', batchList)
    .option('--prompt-len <n>', 'prompt tokens (synthetic ids)', intOption('--prompt-len', 1), 128)
    .option('--gen-len <n>', 'tokens to generate per sequence', intOption('--gen-len', 1), 128)
    .option('--prompt <text>', 'use this text (tokenized) as the prompt instead of synthetic ids')
    .option('--reps <n>', 'measured repetitions after a warm-up', intOption('--reps', 1), 3)
    .option('--requests <n>', 'serve a request trace of n requests with static and with continuous batching', intOption('--requests', 1))
    .option('--arrival-rate <r>', 'mean requests per second of the trace (Poisson)', numberOption('--arrival-rate', 0), 8)
    .option('--trace-input <range>', 'prompt lengths of the trace, e.g. 16-128 (default 16 to --prompt-len)', range('--trace-input'))
    .option('--trace-output <range>', 'output lengths of the trace, e.g. 8-128 (default 8 to --gen-len)', range('--trace-output'))
    .option('--slots <n>', 'rows decoded together when serving the trace (default: the largest --batch, else 8)', intOption('--slots', 1))
    .option('--seed <n>', 'trace and sampling seed', intOption('--seed', 0), 0)
    .option('--draft <artifact>', 'speculative decoding with this draft artifact (same vocabulary)')
    .option('--draft-tokens <k>', 'tokens the draft proposes per target pass', intOption('--draft-tokens', 1), 4)
    .option('--temperature <t>', 'speculative decoding: 0 for greedy', numberOption('--temperature', 0), 0)
    .option('--top-k <k>', 'speculative decoding: sample from the k most likely tokens (0: all)', intOption('--top-k', 0), 0)
    .option('--top-p <p>', 'speculative decoding: nucleus sampling threshold', numberOption('--top-p', 0, 1), 1)
    .option('--json <file>', 'write every figure and the machine as JSON')
    .option('--chart <file>', 'write an SVG chart')
    .option('-q, --quiet', 'no progress')
    .addHelpText(
      'after',
      '\nExample:\n  $ llmopt bench out/m --batch 1,4,16,32 --prompt-len 128 --gen-len 128 --json bench.json --chart bench.svg\n  $ llmopt bench out/m --requests 64 --arrival-rate 8 --json cb.json\n  $ llmopt bench out/m --draft out/draft --draft-tokens 4\n  $ llmopt bench out/m-fp32 out/m-int8 out/m-int4 --batch 1,8 --chart compare.svg',
    )
    .action(async (artifacts: string[], o: BenchCliOptions) => {
      const out = new Output({ quiet: o.quiet });
      const batches = o.batch ?? (o.requests || o.draft ? [] : [1, 8]);
      const report = await runBench({
        artifacts,
        batches,
        promptLen: o.promptLen,
        genLen: o.genLen,
        prompt: o.prompt,
        reps: o.reps,
        trace: o.requests
          ? { requests: o.requests, arrivalRate: o.arrivalRate || Infinity, promptLen: o.traceInput ?? [Math.min(16, o.promptLen), o.promptLen], genLen: o.traceOutput ?? [Math.min(8, o.genLen), o.genLen], slots: o.slots ?? Math.max(8, ...batches), seed: o.seed }
          : undefined,
        draft: o.draft,
        draftTokens: o.draftTokens,
        sampling: { temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed },
        device: o.device,
        rankDevices: o.rankDevices,
        threads: o.threads,
        onProgress: (what) => out.log(what),
      });
      if (o.json) writeFileSync(o.json, JSON.stringify(report, null, 2) + '\n');
      if (o.chart) writeFileSync(o.chart, benchChart(report));
      out.result(formatReport(report));
    });
}
