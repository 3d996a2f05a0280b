// One measured serving run: requests through the scheduler (static or continuous batching), summed
// up as throughput and latency percentiles (time to first token, inter-token, end to end).
import type { CausalLM } from '../runtime/model.js';
import { serve, type Completion, type Policy, type Request } from '../runtime/scheduler.js';
import { peakRssMiB } from './machine.js';
import { percentiles, type Percentiles } from './stats.js';

export interface ServingRun {
  policy: Policy;
  requests: number;
  generatedTokens: number;
  /** From the start to the last token. */
  seconds: number;
  /** Generated tokens per second over the whole run. */
  throughput: number;
  prefillSeconds: number;
  decodeSeconds: number;
  decodeSteps: number;
  /** Tokens chosen by decode steps per second of decode steps, all rows together. */
  decodeTokensPerSecond: number;
  timeToFirstToken: Percentiles;
  interTokenLatency: Percentiles;
  endToEnd: Percentiles;
  peakRssMiB: number;
}

/** Per-request latencies, in seconds. */
export function latencies(completions: Completion[]): { ttft: number[]; itl: number[]; e2e: number[] } {
  const done = completions.filter((c) => c.tokenTimes.length > 0);
  return {
    ttft: done.map((c) => c.tokenTimes[0]! - c.arrival),
    itl: done.flatMap((c) => c.tokenTimes.slice(1).map((t, i) => t - c.tokenTimes[i]!)),
    e2e: done.map((c) => c.tokenTimes[c.tokenTimes.length - 1]! - c.arrival),
  };
}

/** Serves `requests` to the end under `policy` with `slots` rows; every request runs to its length (no EOS). */
export async function measureServing(model: CausalLM, requests: Request[], policy: Policy, slots: number): Promise<ServingRun> {
  const r = await serve(model, requests, { slots, policy, stopTokens: [] });
  const l = latencies(r.completions);
  const generatedTokens = r.completions.reduce((a, c) => a + c.tokens.length, 0);
  const seconds = Math.max(...r.completions.map((c) => c.tokenTimes[c.tokenTimes.length - 1] ?? 0));
  return {
    policy: r.policy,
    requests: requests.length,
    generatedTokens,
    seconds,
    throughput: generatedTokens / seconds,
    prefillSeconds: r.prefillSeconds,
    decodeSeconds: r.decodeSeconds,
    decodeSteps: r.decodeSteps,
    decodeTokensPerSecond: r.decodeTokens / r.decodeSeconds,
    timeToFirstToken: percentiles(l.ttft),
    interTokenLatency: percentiles(l.itl),
    endToEnd: percentiles(l.e2e),
    peakRssMiB: peakRssMiB(),
  };
}
