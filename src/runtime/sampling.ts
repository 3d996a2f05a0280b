// Next-token selection: greedy, or sampling with temperature, top-k and top-p from a seeded generator,
// so that a given --seed reproduces the same text.

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

export class Sampler {
  private readonly random: () => number;

  constructor(readonly options: SamplingOptions) {
    this.random = seededRandom(options.seed);
  }

  /** Picks a token from one row of logits. */
  next(logits: Float32Array): number {
    const { temperature, topK, topP } = this.options;
    if (temperature <= 0) return argmax(logits);
    const n = logits.length;
    let order = Array.from({ length: n }, (_, i) => i);
    order.sort((a, b) => logits[b]! - logits[a]!);
    if (topK > 0 && topK < n) order = order.slice(0, topK);
    const max = logits[order[0]!]!;
    const probs = order.map((i) => Math.exp((logits[i]! - max) / temperature));
    let sum = probs.reduce((a, b) => a + b, 0);
    if (topP < 1) {
      let cumulative = 0;
      let keep = 0;
      while (keep < probs.length) {
        cumulative += probs[keep]! / sum;
        keep++;
        if (cumulative >= topP) break;
      }
      order = order.slice(0, keep);
      probs.length = keep;
      sum = probs.reduce((a, b) => a + b, 0);
    }
    let r = this.random() * sum;
    for (let i = 0; i < order.length; i++) {
      r -= probs[i]!;
      if (r <= 0) return order[i]!;
    }
    return order[order.length - 1]!;
  }
}
