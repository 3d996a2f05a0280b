// Generation for a list of prompts: every prompt becomes a request with its own seeded sampler, served
// by the continuous-batching scheduler (static batching where the cache cannot move rows).
import type { CausalLM } from './model.js';
import type { SamplingOptions, StopReason } from './sampling.js';
import { serve } from './scheduler.js';

export { checkPrompts } from './scheduler.js';

export interface GenerateOptions {
  maxNewTokens: number;
  sampling: SamplingOptions;
  /** Token ids that end a row (defaults to the model's eos ids). */
  stopTokens?: number[];
  /** Streaming: called for every generated token as soon as it is chosen. */
  onToken?: (row: number, id: number) => void;
  /** Most rows decoded together (default: all prompts); further prompts wait for a free slot. */
  maxBatch?: number;
}

export interface GenerateResult {
  /** Generated ids per row (the stop token included when one ended the row). */
  tokens: number[][];
  stopReasons: StopReason[];
  promptTokens: number;
  /** Seconds spent in prefill forward passes and in decode steps. */
  prefillSeconds: number;
  decodeSeconds: number;
  decodeSteps: number;
  /** Tokens chosen by decode steps, over all rows. */
  decodeTokens: number;
}

export async function generate(model: CausalLM, prompts: number[][], opts: GenerateOptions): Promise<GenerateResult> {
  const requests = prompts.map((prompt, b) => ({
    prompt,
    maxNewTokens: opts.maxNewTokens,
    sampling: { ...opts.sampling, seed: opts.sampling.seed + b },
  }));
  const r = await serve(model, requests, {
    slots: opts.maxBatch ?? Math.max(1, prompts.length),
    stopTokens: opts.stopTokens,
    onToken: opts.onToken,
  });
  return {
    tokens: r.completions.map((c) => c.tokens),
    stopReasons: r.completions.map((c) => c.stopReason),
    promptTokens: prompts.reduce((a, p) => a + p.length, 0),
    prefillSeconds: r.prefillSeconds,
    decodeSeconds: r.decodeSeconds,
    decodeSteps: r.decodeSteps,
    decodeTokens: r.decodeTokens,
  };
}
