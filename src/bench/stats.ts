// Summaries of repeated measurements: median and spread of repetitions, and latency percentiles.

/** Median and range of repeated measurements of one figure. */
export interface Stats {
  median: number;
  min: number;
  max: number;
}

export function stats(xs: number[]): Stats {
  if (xs.length === 0) return { median: NaN, min: NaN, max: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { median: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, max: s[s.length - 1]! };
}

/** "median (min-max)". */
export const formatStats = (s: Stats, digits = 1) => `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}-${s.max.toFixed(digits)})`;

/** The q-th percentile (0..100) with linear interpolation between order statistics. */
export function percentile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = ((s.length - 1) * q) / 100;
  const lo = Math.floor(pos);
  return s[lo]! + (s[Math.min(lo + 1, s.length - 1)]! - s[lo]!) * (pos - lo);
}

/** Latency percentiles, in milliseconds. */
export interface Percentiles {
  p50: number;
  p95: number;
  p99: number;
}

export function percentiles(secondsList: number[]): Percentiles {
  const ms = secondsList.map((s) => s * 1000);
  return { p50: percentile(ms, 50), p95: percentile(ms, 95), p99: percentile(ms, 99) };
}

/** Per-percentile stats over repetitions. */
export function percentileStats(runs: Percentiles[]): Record<keyof Percentiles, Stats> {
  return { p50: stats(runs.map((r) => r.p50)), p95: stats(runs.map((r) => r.p95)), p99: stats(runs.map((r) => r.p99)) };
}
