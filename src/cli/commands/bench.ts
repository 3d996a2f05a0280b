// `llmopt bench`: throughput and latency of one or more artifacts (static batching per batch size, a
// request trace under static and continuous batching, speculative decoding), as a table, JSON and SVG.
import { writeFileSync } from 'node:fs';
import type { BenchReport } from '../../bench/bench.js';
import { benchChart } from '../../bench/chart.js';
import { describeMachine } from '../../bench/machine.js';
import { formatStats, type Stats } from '../../bench/stats.js';
import { passAction, passCommand } from '../pass-command.js';
import { table } from '../output.js';

const f = formatStats;
const pct = (p: Record<'p50' | 'p95' | 'p99', Stats>) =>
  `${p.p50.median.toFixed(1)} / ${p.p95.median.toFixed(1)} / ${p.p99.median.toFixed(1)}`;
const short = (path: string) => path.replace(/\/+$/, '').split('/').pop()!;

/** The report as readable tables, one per kind of measurement. */
function formatReport(r: BenchReport): string {
  const parts = [`machine: ${describeMachine(r.machine)}`];
  parts.push(
    ...r.artifacts.map(
      (a, i) => `[${i + 1}] ${a.path}: ${a.description}, ${a.layers} layers, hidden ${a.hidden}, vocab ${a.vocab}, context ${a.context}`,
    ),
  );
  const many = r.artifacts.length > 1;
  if (r.batching.length) {
    parts.push(
      '',
      `static batching, prompt ${r.settings.prompt ? 'text' : r.settings.promptLen}, generate ${r.settings.genLen}, ` +
        `${r.settings.reps} reps: median (min-max)`,
    );
    parts.push(
      table([
        [
          'artifact',
          'batch',
          'prefill tok/s',
          'decode tok/s (all rows)',
          'per sequence',
          `decode vs batch ${r.batching[0]!.scalingBase}`,
          'TTFT ms',
          'ITL ms p50 / p95 / p99',
          'peak RSS MiB',
          ...(many ? ['decode vs [1]'] : []),
        ],
        ...r.batching.map((b) => [
          short(b.artifact),
          b.batch,
          f(b.prefillTokensPerSecond, 0),
          f(b.decodeTokensPerSecond),
          f(b.perSequenceTokensPerSecond),
          f(b.decodeScaling, 2),
          f(b.timeToFirstTokenMs),
          pct(b.interTokenLatencyMs),
          b.peakRssMiB.toFixed(0),
          ...(many ? [f(b.decodeRatioToFirst, 2)] : []),
        ]),
      ]),
    );
  }
  if (r.serving.length) {
    const t = r.settings.trace!;
    parts.push(
      '',
      `request trace: ${t.requests} requests, ${t.arrivalRate}/s Poisson arrivals, prompts ${t.promptLen.join('-')}, ` +
        `outputs ${t.genLen.join('-')} tokens, ${t.slots} rows, seed ${t.seed}`,
    );
    parts.push(
      table([
        [
          'artifact',
          'policy',
          'throughput tok/s',
          'vs static',
          'TTFT ms p50 / p95 / p99',
          'ITL ms p50 / p95 / p99',
          'end-to-end ms p50 / p95 / p99',
          ...(many ? ['throughput vs [1]'] : []),
        ],
        ...r.serving.map((s) => [
          short(s.artifact),
          s.policy,
          f(s.throughput),
          f(s.throughputOverStatic, 2),
          pct(s.timeToFirstTokenMs),
          pct(s.interTokenLatencyMs),
          pct(s.endToEndMs),
          ...(many ? [f(s.throughputRatioToFirst, 2)] : []),
        ]),
      ]),
    );
  }
  if (r.speculative.length) {
    parts.push(
      '',
      `speculative decoding, batch 1, K = ${r.settings.draftTokens}, draft ${r.settings.draft}, ` +
        `${r.settings.sampling.temperature > 0 ? `sampling at temperature ${r.settings.sampling.temperature}` : 'greedy'}`,
    );
    parts.push(
      table([
        [
          'artifact',
          'acceptance',
          'tokens / target pass',
          'decode tok/s alone',
          'with draft',
          'speedup',
          'ms: target step / target pass / draft pass',
          'same output',
        ],
        ...r.speculative.map((s) => [
          short(s.artifact),
          f(s.acceptanceRate, 3),
          f(s.tokensPerTargetPass, 2),
          f(s.targetOnlyTokensPerSecond),
          f(s.speculativeTokensPerSecond),
          f(s.speedup, 2),
          `${s.targetStepMs.median.toFixed(1)} / ${s.targetPassMs.median.toFixed(1)} / ${s.draftPassMs.median.toFixed(1)}`,
          s.identical === null ? 'n/a (sampling)' : String(s.identical),
        ]),
      ]),
    );
  }
  return parts.join('\n');
}

export function benchCommand() {
  return passCommand('bench')
    .description(
      'measure throughput and latency: static batching per batch size, continuous batching on a request trace, speculative decoding',
    )
    .argument('<artifacts...>', 'artifact folders, measured alternately and compared with the first')
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  $ llmopt bench out/m --batch 1,4,16,32 --prompt-len 128 --gen-len 128 --json bench.json --chart bench.svg\n' +
        '  $ llmopt bench out/m --requests 64 --arrival-rate 8 --json cb.json\n' +
        '  $ llmopt bench out/m --draft out/draft --draft-tokens 4\n' +
        '  $ llmopt bench out/m-fp32 out/m-int8 out/m-int4 --batch 1,8 --chart compare.svg',
    )
    .action(
      passAction('bench', {
        print: (report, o, out) => {
          if (typeof o.json === 'string') writeFileSync(o.json, `${JSON.stringify(report, null, 2)}\n`);
          if (typeof o.chart === 'string') writeFileSync(o.chart, benchChart(report));
          out.result(formatReport(report));
        },
      }),
    );
}
