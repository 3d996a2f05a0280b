// Static batching at one batch size: B equal prompts prefilled together, then decoded together, with
// prefill and decode timed apart (the figure that shows how much throughput batching buys).
import type { CausalLM } from '../runtime/model.js';
import { measureServing, type ServingRun } from './serving.js';
import { syntheticPrompt } from './trace.js';

export interface BatchRun {
  batch: number;
  prefillTokensPerSecond: number;
  /** All rows together, and per row. */
  decodeTokensPerSecond: number;
  perSequenceTokensPerSecond: number;
  run: ServingRun;
}

/** `prompt` (token ids) replaces the synthetic prompt of promptLen tokens in every row. */
export async function measureBatch(
  model: CausalLM,
  batch: number,
  promptLen: number,
  genLen: number,
  prompt?: number[],
): Promise<BatchRun> {
  const requests = Array.from({ length: batch }, (_, b) => ({
    prompt: prompt ?? syntheticPrompt(promptLen, model.spec.vocabSize, b),
    maxNewTokens: genLen,
  }));
  const run = await measureServing(model, requests, 'static', batch);
  const promptTokens = requests.reduce((a, r) => a + r.prompt.length, 0);
  return {
    batch,
    prefillTokensPerSecond: promptTokens / run.prefillSeconds,
    decodeTokensPerSecond: run.decodeTokensPerSecond,
    perSequenceTokensPerSecond: run.decodeTokensPerSecond / batch,
    run,
  };
}
