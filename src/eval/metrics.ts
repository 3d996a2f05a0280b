// Token-level quality metrics over logits, accumulated in float64: negative log-likelihood (for
// perplexity), KL divergence of a variant from a reference, and top-1 agreement.

/** log-softmax of one row, in float64. */
export function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}

/** KL(P || Q) = sum p (log p - log q), from log-probabilities. */
export function klDivergence(logP: Float64Array, logQ: Float64Array): number {
  let kl = 0;
  for (let i = 0; i < logP.length; i++) {
    const p = Math.exp(logP[i]!);
    if (p > 0) kl += p * (logP[i]! - logQ[i]!);
  }
  return Math.max(0, kl);
}

export function argmax64(x: Float64Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** Running sums over predicted tokens. */
export class MetricAccumulator {
  tokens = 0;
  nll = 0;
  refNll = 0;
  kl = 0;
  klMax = 0;
  agree = 0;
  hasReference = false;

  /** Adds one predicted token: the model's log-probs, optionally the reference's, and the true next token. */
  add(logQ: Float64Array, target: number, logP?: Float64Array): void {
    this.tokens++;
    this.nll -= logQ[target]!;
    if (logP) {
      this.hasReference = true;
      this.refNll -= logP[target]!;
      const kl = klDivergence(logP, logQ);
      this.kl += kl;
      if (kl > this.klMax) this.klMax = kl;
      if (argmax64(logP) === argmax64(logQ)) this.agree++;
    }
  }
}
