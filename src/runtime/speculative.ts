// Speculative decoding at batch 1 (Leviathan et al. 2023, Chen et al. 2023): a small draft model (or prompt lookup,
// prompt-lookup.ts) proposes K tokens, the target scores all of them in one forward pass, and the
// rejection-sampling rule keeps a prefix of them so that the output follows the target's own
// distribution (greedy: exactly the target's greedy output). Both caches roll back past a rejection.
import { InputError } from '../core/errors.js';
import { openModel, type CausalLM, type OpenOptions, type SequenceState } from './model.js';
import { PROMPT_LOOKUP, lookupProposals } from './prompt-lookup.js';
import { Sampler, StopRule, draw, type SamplingOptions, type StopReason } from './sampling.js';
import { checkPrompts } from './scheduler.js';
import type { GenerateOptions, GenerateResult } from './generate.js';

export interface SpeculativeOptions {
  /** K: tokens the draft proposes per target pass. */
  draftTokens: number;
  maxNewTokens: number;
  sampling: SamplingOptions;
  /** Token ids that end generation (defaults to the target's eos ids). */
  stopTokens?: number[];
  onToken?: (id: number) => void;
  /** Polled before each round and after each token: true ends generation early (stop reason 'cancelled'). */
  cancelled?: () => boolean;
}

export interface SpeculativeResult {
  tokens: number[];
  stopReason: StopReason;
  /** Target forward passes after the prefill, each verifying up to K proposals. */
  targetPasses: number;
  draftPasses: number;
  proposed: number;
  accepted: number;
  /** The target's prefill (which chooses the first token). */
  prefillSeconds: number;
  /** Everything after the first token. */
  decodeSeconds: number;
  /** Time inside target and draft forward passes after the prefill. */
  targetSeconds: number;
  draftSeconds: number;
}

/** What proposes tokens: a draft model, or prompt lookup (n-gram matches in the text so far). */
export type Draft = CausalLM | typeof PROMPT_LOOKUP;

/** Opens what --draft names: `prompt-lookup` (a folder of that name: ./prompt-lookup), or a draft artifact. */
export async function openDraft(path: string, opts: OpenOptions): Promise<Draft> {
  return path === PROMPT_LOOKUP ? PROMPT_LOOKUP : openModel(path, opts);
}

/** Releases a draft model (prompt lookup holds nothing). */
export async function releaseDraft(draft: Draft | null): Promise<void> {
  if (draft !== null && draft !== PROMPT_LOOKUP) await draft.release();
}

/** Refuses a draft that cannot propose the target's tokens. */
export function checkDraft(target: CausalLM, draft: Draft): void {
  if (draft === PROMPT_LOOKUP) return;
  if (draft.spec.vocabSize !== target.spec.vocabSize) {
    throw new InputError(
      `the draft's vocabulary has ${draft.spec.vocabSize} tokens, the target's ${target.spec.vocabSize}: ` +
        `a draft must share the target's tokenizer`,
    );
  }
}

/**
 * The verification rule for one proposal x drawn from the draft's q: keep it with probability
 * min(1, p(x) / q(x)); otherwise draw the replacement from max(0, p - q), renormalised. The token that
 * comes out is distributed exactly as p.
 */
export function verifyProposal(x: number, p: Float64Array, q: Float64Array, random: () => number): { accepted: boolean; token: number } {
  if (random() * q[x]! < p[x]!) return { accepted: true, token: x };
  const residual = new Float64Array(p.length);
  let total = 0;
  for (let i = 0; i < p.length; i++) total += residual[i] = Math.max(0, p[i]! - q[i]!);
  return { accepted: false, token: total > 0 ? draw(residual, random, total) : draw(p, random) };
}

/** Generates from `prompt` with the target, the draft proposing; see the file header. */
export async function speculativeGenerate(
  target: CausalLM,
  draft: Draft,
  prompt: number[],
  opts: SpeculativeOptions,
): Promise<SpeculativeResult> {
  checkDraft(target, draft);
  if (!Number.isInteger(opts.draftTokens) || opts.draftTokens < 1)
    throw new InputError(`--draft-tokens ${opts.draftTokens}: expected a positive integer`);
  if (prompt.length === 0) throw new InputError('the prompt is empty');
  const context = Math.min(target.spec.maxPositions, draft === PROMPT_LOOKUP ? Infinity : draft.spec.maxPositions);
  if (prompt.length >= context) throw new InputError(`the prompt is ${prompt.length} tokens, longer than the context of ${context} allows`);
  const rule = new StopRule(new Set(opts.stopTokens ?? target.spec.eosTokenIds), opts.maxNewTokens, prompt.length, context);
  const budget = rule.budget;
  const sampler = new Sampler(opts.sampling);
  const r: SpeculativeResult = {
    tokens: [],
    stopReason: 'length',
    targetPasses: 0,
    draftPasses: 0,
    proposed: 0,
    accepted: 0,
    prefillSeconds: 0,
    decodeSeconds: 0,
    targetSeconds: 0,
    draftSeconds: 0,
  };
  if (budget <= 0) return r;
  // Neither cache ever holds more than the prompt and the budget (see the proposal bound below).
  const targetCache = target.createCache(1, prompt.length + budget);
  const drafter =
    draft === PROMPT_LOOKUP ? lookupDrafter(target.spec.vocabSize) : modelDrafter(draft, prompt.length + budget, opts.draftTokens);
  try {
    return await speculate(target, drafter, targetCache, prompt, opts, { rule, sampler, r });
  } finally {
    targetCache.release();
    drafter.release();
  }
}

/** One round's proposals, each with the draft distribution it was drawn from. */
interface Proposals {
  tokens: number[];
  q: Float64Array[];
}

/** The draft side of the rounds: proposes continuations of seq, and forgets what the target rejected. */
interface Drafter {
  /** Up to k proposals after seq (fewer, even none, when it has nothing to propose); adds to r's draft figures. */
  propose(seq: readonly number[], k: number, dist: (logits: Float32Array) => Float64Array, random: () => number): Promise<Proposals>;
  /** Only seq's first `length` tokens stand. */
  keep(length: number): void;
  release(): void;
  passes: number;
  seconds: number;
}

/** A draft model with its own cache, fed one token at a time (after catching up on what it has not seen). */
function modelDrafter(draft: CausalLM, capacity: number, draftTokens: number): Drafter {
  // The draft rolls back up to draftTokens proposals it made one step each (a sliding-window cache keeps them).
  const cache = draft.createCache(1, capacity, { rollback: draftTokens });
  const d: Drafter = {
    passes: 0,
    seconds: 0,
    async propose(seq, k, dist, random) {
      const out: Proposals = { tokens: [], q: [] };
      let feed = seq.slice(cache.lengths[0]);
      for (let i = 0; i < k; i++) {
        const t = performance.now();
        const logits = await draft.forward(cache, [feed], { logits: 'last' });
        d.seconds += (performance.now() - t) / 1000;
        d.passes++;
        out.q.push(dist(logits.at(0, feed.length - 1)));
        out.tokens.push(draw(out.q[i]!, random));
        feed = [out.tokens[i]!];
      }
      return out;
    },
    keep(length) {
      if (cache.lengths[0]! > length) cache.truncate(0, length);
    },
    release: () => cache.release(),
  };
  return d;
}

/**
 * Prompt lookup: proposals chosen outright, so q is all mass on the proposal; the rule then keeps x with probability
 * p(x) and otherwise draws from p without x, which is still exactly p (greedy: kept iff x is the target's argmax).
 */
function lookupDrafter(vocab: number): Drafter {
  const d: Drafter = {
    passes: 0,
    seconds: 0,
    async propose(seq, k) {
      const t = performance.now();
      const tokens = lookupProposals(seq, k);
      const q = tokens.map((x) => {
        const one = new Float64Array(vocab);
        one[x] = 1;
        return one;
      });
      d.seconds += (performance.now() - t) / 1000;
      d.passes++;
      return { tokens, q };
    },
    keep: () => {},
    release: () => {},
  };
  return d;
}

/** The rounds of speculativeGenerate over the target's cache and the drafter (see the file header). */
async function speculate(
  target: CausalLM,
  drafter: Drafter,
  targetCache: SequenceState,
  prompt: number[],
  opts: SpeculativeOptions,
  { rule, sampler, r }: { rule: StopRule; sampler: Sampler; r: SpeculativeResult },
): Promise<SpeculativeResult> {
  const { budget } = rule;
  const random = sampler.random;
  const dist = (logits: Float32Array) => sampler.distribution(logits);
  const seq = [...prompt];
  /** Appends a chosen token; true when generation is over. */
  const emit = (id: number): boolean => {
    seq.push(id);
    r.tokens.push(id);
    opts.onToken?.(id);
    const why = rule.after(id, r.tokens.length) ?? (opts.cancelled?.() ? 'cancelled' : null);
    if (why) r.stopReason = why;
    return why !== null;
  };

  let t0 = performance.now();
  const first = await target.forward(targetCache, [prompt], { logits: 'last' });
  r.prefillSeconds = (performance.now() - t0) / 1000;
  let done = emit(sampler.next(first.at(0, prompt.length - 1)));
  t0 = performance.now();
  // Invariant between rounds: the target's cache holds seq but its last token, which the next pass feeds.
  while (!done) {
    if (opts.cancelled?.()) {
      r.stopReason = 'cancelled';
      break;
    }
    // Proposals stop one short of the budget: the target's pass always adds a token of its own.
    const { tokens: proposals, q } = await drafter.propose(seq, Math.min(opts.draftTokens, budget - r.tokens.length - 1), dist, random);
    const K = proposals.length;
    const t = performance.now();
    const scored = await target.forward(targetCache, [[seq[seq.length - 1]!, ...proposals]]); // [1, K+1, V]
    r.targetSeconds += (performance.now() - t) / 1000;
    r.targetPasses++;
    let n = 0;
    let next = -1;
    for (; n < K; n++) {
      const v = verifyProposal(proposals[n]!, dist(scored.at(0, n)), q[n]!, random);
      if (!v.accepted) {
        next = v.token;
        break;
      }
    }
    if (n === K) next = sampler.next(scored.at(0, K)); // all kept: the target's bonus token
    r.proposed += K;
    r.accepted += n;
    // Roll back past the first rejected proposal: keep seq and the n accepted tokens.
    targetCache.truncate(0, seq.length + n);
    drafter.keep(seq.length + n);
    for (const id of [...proposals.slice(0, n), next]) if ((done = emit(id))) break;
  }
  r.decodeSeconds = (performance.now() - t0) / 1000;
  r.draftPasses = drafter.passes;
  r.draftSeconds = drafter.seconds;
  return r;
}

/** `generate` with a draft: each prompt in turn (speculative decoding runs at batch 1), seeds as in generate. */
export async function generateWithDraft(
  target: CausalLM,
  draft: Draft,
  prompts: number[][],
  opts: GenerateOptions & { draftTokens: number },
): Promise<GenerateResult & { proposed: number; accepted: number; targetPasses: number }> {
  checkPrompts(target, prompts);
  const r = {
    tokens: [] as number[][],
    stopReasons: [] as StopReason[],
    promptTokens: 0,
    prefillSeconds: 0,
    decodeSeconds: 0,
    decodeSteps: 0,
    decodeTokens: 0,
    proposed: 0,
    accepted: 0,
    targetPasses: 0,
  };
  for (const [b, prompt] of prompts.entries()) {
    const s = await speculativeGenerate(target, draft, prompt, {
      ...opts,
      sampling: { ...opts.sampling, seed: opts.sampling.seed + b },
      onToken: opts.onToken && ((id) => opts.onToken!(b, id)),
    });
    r.tokens.push(s.tokens);
    r.stopReasons.push(s.stopReason);
    r.promptTokens += prompt.length;
    r.prefillSeconds += s.prefillSeconds;
    r.decodeSeconds += s.decodeSeconds;
    r.decodeSteps += s.targetPasses;
    r.decodeTokens += Math.max(0, s.tokens.length - 1);
    r.proposed += s.proposed;
    r.accepted += s.accepted;
    r.targetPasses += s.targetPasses;
  }
  return r;
}
