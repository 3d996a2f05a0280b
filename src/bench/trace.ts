// Synthetic workloads: fixed token prompts, and seeded request traces with mixed prompt and output
// lengths arriving as a Poisson process, so that serving policies are compared on the same requests.
import { seededRandom } from '../runtime/sampling.js';
import type { Request } from '../runtime/scheduler.js';

/** A deterministic prompt of token ids below `vocab` (ids 0-2 are left out: pad, bos, eos by convention); each row gets its own. */
export function syntheticPrompt(length: number, vocab: number, row = 0): number[] {
  return Array.from({ length }, (_, i) => 3 + ((i * 7919 + row * 104729) % (vocab - 3)));
}

export interface TraceOptions {
  requests: number;
  /** Mean arrivals per second (Infinity: all at once). */
  arrivalRate: number;
  /** Inclusive ranges, drawn uniformly. */
  promptLen: [number, number];
  genLen: [number, number];
  vocab: number;
  seed: number;
}

export function requestTrace(o: TraceOptions): Request[] {
  const random = seededRandom(o.seed);
  const between = ([lo, hi]: [number, number]) => lo + Math.floor(random() * (hi - lo + 1));
  let t = 0;
  return Array.from({ length: o.requests }, (_, i) => {
    // Exponential gaps between arrivals make a Poisson process of rate arrivalRate.
    if (i > 0 && Number.isFinite(o.arrivalRate)) t += -Math.log(1 - random()) / o.arrivalRate;
    return { prompt: syntheticPrompt(between(o.promptLen), o.vocab, i), maxNewTokens: between(o.genLen), arrival: t };
  });
}
