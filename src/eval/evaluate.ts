// eval: perplexity of a model over windows of text and, against a reference model, per-token
// KL divergence and top-1 agreement. Both models run the same right-padded batches in lockstep,
// so reference logits are never stored.
import { InputError } from '../core/errors.js';
import { forwardOnce, type CausalLM } from '../runtime/model.js';
import type { EvalWindow } from './dataset.js';
import { logSoftmax, MetricAccumulator } from './metrics.js';

export interface EvalOptions {
  batchSize: number;
  onProgress?: (done: number, total: number) => void;
}

export interface EvalReport {
  windows: number;
  /** Predicted tokens (each window's tokens after the first, or after its scoreFrom). */
  tokens: number;
  perplexity: number;
  meanNll: number;
  reference: null | {
    perplexity: number;
    /** Mean KL(reference || model) per predicted token, in nats. */
    kl: number;
    klMax: number;
    top1: number;
    pplRatio: number;
  };
  seconds: number;
}

export async function evaluate(model: CausalLM, windows: EvalWindow[], reference: CausalLM | null, opts: EvalOptions): Promise<EvalReport> {
  if (reference && reference.spec.vocabSize !== model.spec.vocabSize) {
    throw new InputError(`reference vocabulary (${reference.spec.vocabSize}) differs from the model's (${model.spec.vocabSize})`);
  }
  const started = performance.now();
  const acc = new MetricAccumulator();
  for (let i = 0; i < windows.length; i += opts.batchSize) {
    const group = windows.slice(i, i + opts.batchSize);
    const batch = group.map((w) => w.ids);
    const logits = await forwardOnce(model, batch);
    const refLogits = reference ? await forwardOnce(reference, batch) : null;
    for (let b = 0; b < batch.length; b++) {
      const ids = batch[b]!;
      for (let t = group[b]!.scoreFrom ?? 0; t + 1 < ids.length; t++) {
        acc.add(logSoftmax(logits.at(b, t)), ids[t + 1]!, refLogits ? logSoftmax(refLogits.at(b, t)) : undefined);
      }
    }
    opts.onProgress?.(Math.min(i + opts.batchSize, windows.length), windows.length);
  }
  const perplexity = Math.exp(acc.nll / acc.tokens);
  const refPpl = Math.exp(acc.refNll / acc.tokens);
  return {
    windows: windows.length,
    tokens: acc.tokens,
    perplexity,
    meanNll: acc.nll / acc.tokens,
    reference: reference
      ? { perplexity: refPpl, kl: acc.kl / acc.tokens, klMax: acc.klMax, top1: acc.agree / acc.tokens, pplRatio: perplexity / refPpl }
      : null,
    seconds: (performance.now() - started) / 1000,
  };
}

export interface GateThresholds {
  maxKl?: number;
  minTop1?: number;
  maxPplRatio?: number;
}

export interface GateResult {
  gate: 'max-kl' | 'min-top1' | 'max-ppl-ratio';
  value: number;
  limit: number;
  passed: boolean;
}

/** Checks the thresholds a user set; gates that need a reference fail loudly without one. */
export function checkGates(report: EvalReport, gates: GateThresholds): GateResult[] {
  const wanted = Object.entries(gates).filter(([, v]) => v !== undefined);
  if (wanted.length && !report.reference) throw new InputError('--max-kl, --min-top1 and --max-ppl-ratio need --reference');
  const r = report.reference!;
  const out: GateResult[] = [];
  if (gates.maxKl !== undefined) out.push({ gate: 'max-kl', value: r.kl, limit: gates.maxKl, passed: r.kl <= gates.maxKl });
  if (gates.minTop1 !== undefined) out.push({ gate: 'min-top1', value: r.top1, limit: gates.minTop1, passed: r.top1 >= gates.minTop1 });
  if (gates.maxPplRatio !== undefined)
    out.push({ gate: 'max-ppl-ratio', value: r.pplRatio, limit: gates.maxPplRatio, passed: r.pplRatio <= gates.maxPplRatio });
  return out;
}
