// One measured speculative-decoding run beside a target-only run on the same prompt, in the same
// process and back to back, so that the speedup compares like with like.
import { generate } from '../runtime/generate.js';
import type { CausalLM } from '../runtime/model.js';
import type { SamplingOptions } from '../runtime/sampling.js';
import { speculativeGenerate, type Draft } from '../runtime/speculative.js';

export interface SpeculativeRun {
  draftTokens: number;
  acceptanceRate: number;
  /** Tokens emitted per target forward pass after the prefill (1 would be plain decoding). */
  tokensPerTargetPass: number;
  /** Decode tokens/s (after the first token), speculative and target alone. */
  speculativeTokensPerSecond: number;
  targetOnlyTokensPerSecond: number;
  speedup: number;
  /** Milliseconds per call: a target pass verifying K+1 tokens, a draft pass, a plain target step. */
  targetPassMs: number;
  draftPassMs: number;
  targetStepMs: number;
  /** Greedy only: whether the output equals the target's own (null when sampling). */
  identical: boolean | null;
}

export async function measureSpeculative(
  target: CausalLM,
  draft: Draft,
  prompt: number[],
  genLen: number,
  draftTokens: number,
  sampling: SamplingOptions,
): Promise<SpeculativeRun> {
  const alone = await generate(target, [prompt], { maxNewTokens: genLen, sampling, stopTokens: [] });
  const spec = await speculativeGenerate(target, draft, prompt, { draftTokens, maxNewTokens: genLen, sampling, stopTokens: [] });
  const targetOnlyTokensPerSecond = alone.decodeTokens / alone.decodeSeconds;
  const speculativeTokensPerSecond = (spec.tokens.length - 1) / spec.decodeSeconds;
  return {
    draftTokens,
    acceptanceRate: spec.proposed ? spec.accepted / spec.proposed : NaN,
    tokensPerTargetPass: (spec.tokens.length - 1) / spec.targetPasses,
    speculativeTokensPerSecond,
    targetOnlyTokensPerSecond,
    speedup: speculativeTokensPerSecond / targetOnlyTokensPerSecond,
    targetPassMs: (spec.targetSeconds * 1000) / spec.targetPasses,
    draftPassMs: (spec.draftSeconds * 1000) / spec.draftPasses,
    targetStepMs: (alone.decodeSeconds * 1000) / alone.decodeSteps,
    identical: sampling.temperature <= 0 ? spec.tokens.join() === alone.tokens[0]!.join() : null,
  };
}
