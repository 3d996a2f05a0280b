// Serving requests with a KV cache, two ways. Continuous batching: a fixed number of decode slots; a
// request is prefilled alone and its KV rows are copied into a free slot, every step decodes one token
// for all busy slots, and a finished slot is refilled from the queue at once. Static batching: waiting
// requests form one right-padded batch that runs until its longest member is done (the fallback for
// caches that cannot move rows, such as the standard form's concatenating cache).
import { InputError } from '../core/errors.js';
import type { CausalLM, SequenceState } from './model.js';
import { GREEDY, Sampler, StopRule, type SamplingOptions, type StopReason } from './sampling.js';

export type Policy = 'continuous' | 'static';

export interface Request {
  prompt: number[];
  maxNewTokens: number;
  /** Seconds after the start at which the request arrives (default 0: waiting from the start). */
  arrival?: number;
  /** Default greedy. */
  sampling?: SamplingOptions;
}

export interface Completion {
  /** Generated ids (the stop token included when one ended the request). */
  tokens: number[];
  stopReason: StopReason;
  arrival: number;
  /** Seconds from the start at which each token was chosen. */
  tokenTimes: number[];
}

export interface ServeOptions {
  /** Decode slots (continuous) or the largest batch (static). */
  slots: number;
  /** 'continuous' (default) falls back to static batching when the model's cache cannot adopt rows. */
  policy?: Policy;
  /** Token ids that end a request (defaults to the model's eos ids; [] runs every request to its length). */
  stopTokens?: number[];
  /** Streaming: called for every token as soon as it is chosen. */
  onToken?: (request: number, id: number) => void;
}

export interface ServeResult {
  /** One per request, in request order. */
  completions: Completion[];
  /** The policy that ran (continuous may have fallen back to static). */
  policy: Policy;
  seconds: number;
  prefillSeconds: number;
  decodeSeconds: number;
  decodeSteps: number;
  /** Tokens chosen from decode steps (not from prefills). */
  decodeTokens: number;
}

/** Rejects prompts that are empty or leave no room to generate in the model's context. */
export function checkPrompts(model: CausalLM, prompts: number[][]): void {
  const context = model.spec.maxPositions;
  if (prompts.length === 0) throw new InputError('no prompt given');
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new InputError(`prompt ${i + 1} is empty`);
    if (p.length >= context)
      throw new InputError(
        `prompt ${i + 1} is ${p.length} tokens, longer than the model's context of ${context} allows ` +
          `(at most ${context - 1}, leaving room to generate)`,
      );
  });
}

/** Per-request bookkeeping shared by both policies: budget, sampler, stop rule and timings. */
class Tracker {
  readonly completions: Completion[];
  readonly budgets: number[];
  private readonly samplers: Sampler[];
  private readonly rules: StopRule[];
  private readonly start = performance.now();

  constructor(
    model: CausalLM,
    readonly requests: Request[],
    private readonly opts: ServeOptions,
  ) {
    const stop = new Set(opts.stopTokens ?? model.spec.eosTokenIds);
    this.rules = requests.map((r) => new StopRule(stop, r.maxNewTokens, r.prompt.length, model.spec.maxPositions));
    this.budgets = this.rules.map((r) => r.budget);
    this.samplers = requests.map((r) => new Sampler(r.sampling ?? GREEDY));
    this.completions = requests.map((r) => ({ tokens: [], stopReason: 'length', arrival: r.arrival ?? 0, tokenTimes: [] }));
  }

  now(): number {
    return (performance.now() - this.start) / 1000;
  }

  /** Requests with something to generate, in arrival order (stable). */
  order(): number[] {
    return this.requests
      .map((_, i) => i)
      .filter((i) => this.budgets[i]! > 0)
      .sort((a, b) => this.completions[a]!.arrival - this.completions[b]!.arrival || a - b);
  }

  /** Chooses request i's next token from its logits; true when the request is finished. */
  choose(i: number, logits: Float32Array): boolean {
    const c = this.completions[i]!;
    const id = this.samplers[i]!.next(logits);
    c.tokens.push(id);
    c.tokenTimes.push(this.now());
    this.opts.onToken?.(i, id);
    const why = this.rules[i]!.after(id, c.tokens.length);
    if (why) c.stopReason = why;
    return why !== null;
  }

  last(i: number): number {
    const t = this.completions[i]!.tokens;
    return t[t.length - 1]!;
  }

  /** Waits until request i has arrived. */
  async arrivalOf(i: number): Promise<void> {
    const wait = this.completions[i]!.arrival - this.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait * 1000));
  }
}

/** Runs every request to completion under the chosen policy and reports per-token timings. */
export async function serve(model: CausalLM, requests: Request[], opts: ServeOptions): Promise<ServeResult> {
  if (!Number.isInteger(opts.slots) || opts.slots < 1) throw new InputError(`batch size ${opts.slots}: expected a positive integer`);
  checkPrompts(
    model,
    requests.map((r) => r.prompt),
  );
  const track = new Tracker(model, requests, opts);
  const slots = Math.min(opts.slots, requests.length);
  const capacity = Math.max(...requests.map((r, i) => r.prompt.length + track.budgets[i]!));
  const result: ServeResult = {
    completions: track.completions,
    policy: 'static',
    seconds: 0,
    prefillSeconds: 0,
    decodeSeconds: 0,
    decodeSteps: 0,
    decodeTokens: 0,
  };
  if ((opts.policy ?? 'continuous') === 'continuous' && model.capabilities.adoptRows) {
    result.policy = 'continuous';
    await continuous(model, track, slots, capacity, result);
  } else {
    await staticBatches(model, track, slots, result);
  }
  result.seconds = track.now();
  return result;
}

async function continuous(model: CausalLM, track: Tracker, slots: number, capacity: number, result: ServeResult): Promise<void> {
  const cache = model.createCache(slots, capacity);
  const prefill = model.createCache(1, capacity);
  try {
    await decodeSlots(model, track, cache, prefill, result);
  } finally {
    prefill.release();
    cache.release();
  }
}

/** Continuous batching over `cache`'s rows, each request prefilled alone in `prefill` and moved into a free row. */
async function decodeSlots(model: CausalLM, track: Tracker, cache: SequenceState, prefill: SequenceState, result: ServeResult) {
  const order = track.order();
  const slot: number[] = new Array(cache.batch).fill(-1); // request in each slot, -1 when free
  let next = 0;
  while (next < order.length || slot.some((i) => i >= 0)) {
    // Admit every arrived request there is a free slot for, each prefilled alone.
    for (
      let b = slot.indexOf(-1);
      b >= 0 && next < order.length && track.completions[order[next]!]!.arrival <= track.now();
      b = slot.indexOf(-1)
    ) {
      const i = order[next++]!;
      const prompt = track.requests[i]!.prompt;
      prefill.truncate(0, 0);
      const t0 = performance.now();
      const logits = await model.forward(prefill, [prompt], { logits: 'last' });
      result.prefillSeconds += (performance.now() - t0) / 1000;
      if (track.choose(i, logits.at(0, prompt.length - 1))) continue;
      cache.adoptRow(b, prefill, 0);
      slot[b] = i;
    }
    if (slot.every((i) => i < 0)) {
      if (next < order.length) await track.arrivalOf(order[next]!);
      continue;
    }
    // A free slot decodes a dummy token at position 0 and is emptied again: its row holds nothing
    // another row attends to (GroupQueryAttention masks each row by its own length).
    const t0 = performance.now();
    const logits = await model.forward(
      cache,
      slot.map((i) => [i >= 0 ? track.last(i) : 0]),
    );
    result.decodeSeconds += (performance.now() - t0) / 1000;
    result.decodeSteps++;
    slot.forEach((i, b) => {
      if (i < 0) return cache.truncate(b, 0);
      result.decodeTokens++;
      if (track.choose(i, logits.at(b, 0))) {
        slot[b] = -1;
        cache.truncate(b, 0);
      }
    });
  }
}

async function staticBatches(model: CausalLM, track: Tracker, slots: number, result: ServeResult): Promise<void> {
  const order = track.order();
  for (let next = 0; next < order.length; ) {
    await track.arrivalOf(order[next]!);
    // Everything waiting (up to the batch size) goes in; later arrivals wait for the whole batch.
    const batch: number[] = [];
    while (next < order.length && batch.length < slots && (batch.length === 0 || track.completions[order[next]!]!.arrival <= track.now()))
      batch.push(order[next++]!);
    await staticBatch(model, track, batch, result);
  }
}

/** One right-padded batch, prefilled together and decoded until every row is done. */
async function staticBatch(model: CausalLM, track: Tracker, batch: number[], result: ServeResult): Promise<void> {
  const prompts = batch.map((i) => track.requests[i]!.prompt);
  const cache = model.createCache(batch.length, Math.max(...batch.map((i, b) => prompts[b]!.length + track.budgets[i]!)));
  try {
    await decodeBatch(model, track, batch, cache, result);
  } finally {
    cache.release();
  }
}

async function decodeBatch(model: CausalLM, track: Tracker, batch: number[], cache: SequenceState, result: ServeResult): Promise<void> {
  const prompts = batch.map((i) => track.requests[i]!.prompt);
  let t0 = performance.now();
  let logits = await model.forward(cache, prompts, { logits: 'last' });
  result.prefillSeconds += (performance.now() - t0) / 1000;
  const done = batch.map((i, b) => track.choose(i, logits.at(b, prompts[b]!.length - 1)));
  while (!done.every(Boolean)) {
    // Finished rows keep stepping on their last token so the batch stays rectangular; they are cut
    // back after each step so that they never outgrow the cache.
    t0 = performance.now();
    logits = await model.forward(
      cache,
      batch.map((i) => [track.last(i)]),
    );
    result.decodeSeconds += (performance.now() - t0) / 1000;
    result.decodeSteps++;
    batch.forEach((i, b) => {
      if (done[b]) return cache.truncate(b, cache.lengths[b]! - 1);
      result.decodeTokens++;
      done[b] = track.choose(i, logits.at(b, 0));
    });
  }
}
