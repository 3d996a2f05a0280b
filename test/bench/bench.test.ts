// The bench's arithmetic and workloads: percentiles, median and range, seeded request traces, and a
// chart that is well-formed SVG.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { percentile, percentiles, stats } from '../../src/bench/stats.js';
import { requestTrace } from '../../src/bench/trace.js';
import { benchChart } from '../../src/bench/chart.js';
import type { BenchReport } from '../../src/bench/bench.js';

test('percentiles interpolate between order statistics; stats give median and range', () => {
  const xs = Array.from({ length: 101 }, (_, i) => 100 - i); // 0..100 shuffled order
  assert.equal(percentile(xs, 50), 50);
  assert.equal(percentile(xs, 95), 95);
  assert.equal(percentile([1, 2], 50), 1.5);
  assert.deepEqual(percentiles([0.001, 0.002, 0.003]), { p50: 2, p95: 2.9, p99: 2.98 });
  assert.deepEqual(stats([3, 1, 2, 10]), { median: 2.5, min: 1, max: 10 });
});

test('request traces are seeded, mixed in length and arrive as a Poisson process', () => {
  const o = {
    requests: 2000,
    arrivalRate: 8,
    promptLen: [16, 128] as [number, number],
    genLen: [8, 64] as [number, number],
    vocab: 320,
    seed: 3,
  };
  const a = requestTrace(o);
  assert.deepEqual(a, requestTrace(o));
  assert.notDeepEqual(a.slice(0, 5), requestTrace({ ...o, seed: 4 }).slice(0, 5));
  const lens = a.map((r) => r.prompt.length);
  assert.ok(Math.min(...lens) === 16 && Math.max(...lens) === 128);
  assert.ok(a.every((r) => r.maxNewTokens >= 8 && r.maxNewTokens <= 64 && r.prompt.every((id) => id >= 3 && id < 320)));
  const rate = (a.length - 1) / a[a.length - 1]!.arrival!;
  assert.ok(Math.abs(rate - 8) < 0.6, `rate ${rate}`);
});

test('the chart is one SVG with a panel per measurement', () => {
  const s = { median: 10, min: 9, max: 11 };
  const p = { p50: s, p95: s, p99: s };
  const report = {
    machine: { cpu: 'cpu <x>', cores: 2, memoryGiB: 1, node: 'v20', onnxruntime: '1.30.0', device: 'cpu' },
    artifacts: [{ path: 'out/a', description: '', vocab: 1, context: 1, layers: 1, hidden: 1 }],
    batching: [1, 8].map((batch) => ({
      artifact: 'out/a',
      batch,
      prefillTokensPerSecond: s,
      decodeTokensPerSecond: s,
      perSequenceTokensPerSecond: s,
      timeToFirstTokenMs: s,
      interTokenLatencyMs: p,
      peakRssMiB: 1,
      decodeRatioToFirst: s,
      decodeScaling: s,
      scalingBase: 1,
    })),
    serving: [],
    speculative: [],
  } as unknown as BenchReport;
  const svg = benchChart(report);
  assert.match(svg, /^<svg/);
  assert.match(svg, /cpu &lt;x&gt;/);
  assert.equal((svg.match(/<polyline/g) ?? []).length, 4); // throughput + three latency percentiles
  assert.doesNotMatch(svg, /NaN/);
});
