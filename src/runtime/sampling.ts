// Next-token selection (greedy, or sampling with temperature, top-k and top-p from a seeded generator,
// so that a given --seed reproduces the same text) and the rule that ends a sequence.

export interface SamplingOptions {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** Keep the k most likely tokens (0: all). */
  topK: number;
  /** Keep the smallest set of tokens whose probability reaches p (1: all). */
  topP: number;
  seed: number;
}

export const GREEDY: SamplingOptions = { temperature: 0, topK: 0, topP: 1, seed: 0 };

/** splitmix32: small, fast and good enough for sampling; reproducible across platforms. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 4294967296;
  };
}

export function argmax(logits: Float32Array, offset = 0, length = logits.length - offset): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < length; i++) {
    const v = logits[offset + i]!;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/**
 * The distribution sampling with these options draws from: temperature, then top-k, then top-p (the
 * smallest set of most likely tokens whose mass reaches p); for greedy decoding, all the mass on the argmax.
 */
export function samplingDistribution(logits: Float32Array, o: SamplingOptions): Float64Array {
  const n = logits.length;
  const p = new Float64Array(n);
  if (o.temperature <= 0) {
    p[argmax(logits)] = 1;
    return p;
  }
  // Without top-k or top-p no sort is needed (a 32,000-token sort per position costs more than a draft pass).
  const order = o.topK > 0 || o.topP < 1 ? Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]!) : null;
  const kept = order ? (o.topK > 0 && o.topK < n ? order.slice(0, o.topK) : order) : null;
  const max = logits[argmax(logits)]!;
  let sum = 0;
  for (const i of kept ?? logits.keys()) sum += p[i] = Math.exp((logits[i]! - max) / o.temperature);
  if (kept && o.topP < 1) {
    let cumulative = 0;
    let keep = 0;
    while (keep < kept.length) {
      cumulative += p[kept[keep]!]! / sum;
      keep++;
      if (cumulative >= o.topP) break;
    }
    for (const i of kept.slice(keep)) p[i] = 0;
    sum = 0;
    for (const i of kept.slice(0, keep)) sum += p[i]!;
  }
  for (let i = 0; i < n; i++) p[i]! /= sum;
  return p;
}

/** Draws an index from a distribution that sums to `total`. */
export function draw(p: Float64Array, random: () => number, total = 1): number {
  let r = random() * total;
  let last = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i]! <= 0) continue;
    last = i;
    r -= p[i]!;
    if (r < 0) return i;
  }
  return last;
}

/**
 * Picks tokens from logits: greedy, or a draw from samplingDistribution with its own seeded
 * generator. Generation, continuous batching and speculative decoding all sample through this.
 */
export class Sampler {
  /** The generator behind every draw, shared with speculative decoding's acceptance tests. */
  readonly random: () => number;

  constructor(readonly options: SamplingOptions) {
    this.random = seededRandom(options.seed);
  }

  /** Picks a token from one row of logits. */
  next(logits: Float32Array): number {
    return this.options.temperature <= 0 ? argmax(logits) : draw(samplingDistribution(logits, this.options), this.random);
  }

  /** The distribution `next` draws from. */
  distribution(logits: Float32Array): Float64Array {
    return samplingDistribution(logits, this.options);
  }
}

/** The log-probability (natural log, of the model's own distribution) of a chosen token and its top alternatives. */
export interface TokenLogprob {
  logprob: number;
  top: Array<{ id: number; logprob: number }>;
}

/** log softmax of `logits` at `id`, and the `top` most likely ids with theirs. */
export function tokenLogprob(logits: Float32Array, id: number, top: number): TokenLogprob {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const norm = max + Math.log(sum);
  const best: Array<{ id: number; logprob: number }> = [];
  if (top > 0) {
    // A running top-k: vocabularies are large and k is at most a handful.
    for (let t = 0; t < logits.length; t++) {
      const v = logits[t]!;
      if (best.length === top && v <= best[top - 1]!.logprob) continue;
      best.push({ id: t, logprob: v });
      best.sort((a, b) => b.logprob - a.logprob);
      if (best.length > top) best.pop();
    }
    for (const b of best) b.logprob -= norm;
  }
  return { logprob: logits[id]! - norm, top: best };
}

/**
 * Why a sequence stopped: an end-of-sequence id, its max new tokens, the model's context, or its caller
 * cancelling it (a server's client that left, or a stop string the caller matched).
 */
export type StopReason = 'eos' | 'length' | 'context' | 'cancelled';

/** When one sequence ends: on a stop id, or once it has its budget (max new tokens, cut by the context). */
export class StopRule {
  /** Tokens the sequence may generate. */
  readonly budget: number;

  constructor(
    private readonly stopTokens: ReadonlySet<number>,
    private readonly maxNewTokens: number,
    promptLength: number,
    context: number,
  ) {
    this.budget = Math.min(maxNewTokens, context - promptLength);
  }

  /** Why the sequence stops after generating `generated` tokens, the last `id`; null while it goes on. */
  after(id: number, generated: number): StopReason | null {
    if (this.stopTokens.has(id)) return 'eos';
    if (generated >= this.budget) return this.budget < this.maxNewTokens ? 'context' : 'length';
    return null;
  }
}
