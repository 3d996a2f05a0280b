// The generation loop: prefill a right-padded batch of prompts, then decode one token per row per
// step over the KV cache, sampling each row with its own seeded sampler, until EOS or the budget.
import { InputError } from '../errors.js';
import type { CausalLM } from './model.js';
import { Sampler, type SamplingOptions } from './sampling.js';

export interface GenerateOptions {
  maxNewTokens: number;
  sampling: SamplingOptions;
  /** Token ids that end a row (defaults to the model's eos ids). */
  stopTokens?: number[];
  /** Streaming: called for every generated token as soon as it is chosen. */
  onToken?: (row: number, id: number) => void;
}

export type StopReason = 'eos' | 'length' | 'context';

export interface GenerateResult {
  /** Generated ids per row (the stop token included when one ended the row). */
  tokens: number[][];
  stopReasons: StopReason[];
  promptTokens: number;
  /** Seconds spent in the prefill forward pass and in decode steps. */
  prefillSeconds: number;
  decodeSeconds: number;
  decodeSteps: number;
}

/** Rejects prompts that are empty or leave no room to generate in the model's context. */
export function checkPrompts(model: CausalLM, prompts: number[][]): void {
  const context = model.spec.maxPositions;
  if (prompts.length === 0) throw new InputError('no prompt given');
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new InputError(`prompt ${i + 1} is empty`);
    if (p.length >= context) throw new InputError(`prompt ${i + 1} is ${p.length} tokens, longer than the model's context of ${context} allows (at most ${context - 1}, leaving room to generate)`);
  });
}

export async function generate(model: CausalLM, prompts: number[][], opts: GenerateOptions): Promise<GenerateResult> {
  checkPrompts(model, prompts);
  const context = model.spec.maxPositions;
  const longest = Math.max(...prompts.map((p) => p.length));
  const budget = Math.min(opts.maxNewTokens, context - longest);
  const stop = new Set(opts.stopTokens ?? model.spec.eosTokenIds);
  const B = prompts.length;
  const samplers = prompts.map((_, b) => new Sampler({ ...opts.sampling, seed: opts.sampling.seed + b }));
  const tokens: number[][] = prompts.map(() => []);
  const stopReasons: (StopReason | null)[] = prompts.map(() => null);
  const cache = model.createCache(B, longest + budget);

  let t0 = performance.now();
  let logits = await model.forward(cache, prompts);
  const prefillSeconds = (performance.now() - t0) / 1000;
  let last = prompts.map((p) => p.length - 1);
  let decodeSteps = 0;
  t0 = performance.now();
  for (let step = 0; step < budget; step++) {
    for (let b = 0; b < B; b++) {
      if (stopReasons[b]) continue;
      const id = samplers[b]!.next(logits.at(b, last[b]!));
      tokens[b]!.push(id);
      opts.onToken?.(b, id);
      if (stop.has(id)) stopReasons[b] = 'eos';
      else if (tokens[b]!.length >= budget) stopReasons[b] = budget < opts.maxNewTokens ? 'context' : 'length';
    }
    if (stopReasons.every((r) => r !== null)) break;
    // Finished rows keep stepping on their last token so the batch stays rectangular; their output is ignored.
    logits = await model.forward(cache, tokens.map((t, b) => [t[t.length - 1] ?? prompts[b]![prompts[b]!.length - 1]!]));
    last = prompts.map(() => 0);
    decodeSteps++;
  }
  const decodeSeconds = (performance.now() - t0) / 1000;
  return {
    tokens,
    stopReasons: stopReasons.map((r) => r ?? 'length'),
    promptTokens: prompts.reduce((a, p) => a + p.length, 0),
    prefillSeconds,
    decodeSeconds,
    decodeSteps,
  };
}
