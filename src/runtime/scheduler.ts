// Serving requests with a KV cache, two ways. Continuous batching: a fixed number of decode slots; a
// request is prefilled alone and its KV rows are copied into a free slot, every step decodes one token
// for all busy slots, and a finished slot is refilled from the queue at once. Static batching: waiting
// requests form one right-padded batch that runs until its longest member is done (the fallback for
// caches that cannot move rows, such as the standard form's concatenating cache). Requests come from a
// RequestSource: a fixed list (`serve`, for generate and bench) or a live queue (live-scheduler.ts).
import { InputError } from '../core/errors.js';
import type { CausalLM, SequenceState } from './model.js';
import { GREEDY, Sampler, StopRule, tokenLogprob, type SamplingOptions, type StopReason, type TokenLogprob } from './sampling.js';

export type Policy = 'continuous' | 'static';

export interface Request {
  prompt: number[];
  maxNewTokens: number;
  /** Seconds after the start at which the request arrives (default 0: waiting from the start). */
  arrival?: number;
  /** Default greedy. */
  sampling?: SamplingOptions;
  /** This request's stop ids (a chat template's end-of-turn tokens); default the serve options'. */
  stopTokens?: number[];
  /** Record each chosen token's log-probability and this many most likely alternatives (0: none). */
  logprobs?: number;
}

export interface Completion {
  /** Generated ids (the stop token included when one ended the request). */
  tokens: number[];
  stopReason: StopReason;
  arrival: number;
  /** Seconds from the start at which each token was chosen. */
  tokenTimes: number[];
  /** Per token, where the request asked for logprobs. */
  logprobs?: TokenLogprob[];
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
  /** Called once a request is over (finished, or cancelled). */
  onDone?: (request: number) => void;
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
export function checkPrompts(model: CausalLM, prompts: number[][], context = model.spec.maxPositions): void {
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

/** Where the scheduler takes requests from (tracker indices): a fixed list, or a live queue. */
export interface RequestSource {
  /** The next request that has arrived by `now` (seconds) and waits for a slot; -1 when none. */
  take(now: number): number;
  /** False once nothing waits and nothing more will come. */
  more(): boolean;
  /** Resolves when `take` may have a request (the next arrival or submission, or the source closing). */
  wait(): Promise<void>;
  /** Whether request i was cancelled: its slot is freed before the next step. */
  cancelled(i: number): boolean;
}

interface Entry {
  request: Request;
  completion: Completion;
  rule: StopRule;
  sampler: Sampler;
}

/** Per-request bookkeeping shared by both policies: budget, sampler, stop rule and timings. */
export class Tracker {
  private readonly entries = new Map<number, Entry>();
  private added = 0;
  private readonly start = performance.now();
  private readonly stop: Set<number>;

  /** `context`: tokens a request may hold, prompt included (the model's context, or a server's smaller cache rows). */
  constructor(
    model: CausalLM,
    private readonly opts: ServeOptions,
    readonly context = model.spec.maxPositions,
  ) {
    this.stop = new Set(opts.stopTokens ?? model.spec.eosTokenIds);
  }

  /** Registers a request; returns its index. */
  add(r: Request, arrival = r.arrival ?? 0): number {
    const stop = r.stopTokens ? new Set([...this.stop, ...r.stopTokens]) : this.stop;
    this.entries.set(this.added, {
      request: r,
      rule: new StopRule(stop, r.maxNewTokens, r.prompt.length, this.context),
      sampler: new Sampler(r.sampling ?? GREEDY),
      completion: { tokens: [], stopReason: 'length', arrival, tokenTimes: [], ...(r.logprobs !== undefined ? { logprobs: [] } : {}) },
    });
    return this.added++;
  }

  private entry(i: number): Entry {
    const e = this.entries.get(i);
    if (!e) throw new Error(`request ${i} is not tracked`);
    return e;
  }

  request(i: number): Request {
    return this.entry(i).request;
  }

  completion(i: number): Completion {
    return this.entry(i).completion;
  }

  budget(i: number): number {
    return this.entry(i).rule.budget;
  }

  /** Drops a finished request's bookkeeping (a long-running server must not keep every request). */
  forget(i: number): void {
    this.entries.delete(i);
  }

  now(): number {
    return (performance.now() - this.start) / 1000;
  }

  /** Chooses request i's next token from its logits; true when the request is finished. */
  choose(i: number, logits: Float32Array): boolean {
    const { completion: c, sampler, rule, request } = this.entry(i);
    const id = sampler.next(logits);
    c.tokens.push(id);
    c.tokenTimes.push(this.now());
    if (c.logprobs) c.logprobs.push(tokenLogprob(logits, id, request.logprobs ?? 0));
    this.opts.onToken?.(i, id);
    const why = rule.after(id, c.tokens.length);
    if (why) {
      c.stopReason = why;
      this.opts.onDone?.(i);
    }
    return why !== null;
  }

  /** Ends request i early (its caller cancelled it). */
  cancel(i: number): void {
    this.entry(i).completion.stopReason = 'cancelled';
    this.opts.onDone?.(i);
  }

  last(i: number): number {
    const t = this.entry(i).completion.tokens;
    return t[t.length - 1]!;
  }
}

/** The fixed list of `serve`: requests taken in arrival order as their arrival time comes. */
class ListSource implements RequestSource {
  private next = 0;
  constructor(
    private readonly order: number[],
    private readonly track: Tracker,
  ) {}
  take(now: number): number {
    const i = this.order[this.next];
    if (i === undefined || this.track.completion(i).arrival > now) return -1;
    this.next++;
    return i;
  }
  more(): boolean {
    return this.next < this.order.length;
  }
  async wait(): Promise<void> {
    const i = this.order[this.next];
    const wait = i === undefined ? 0 : this.track.completion(i).arrival - this.track.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait * 1000));
  }
  cancelled(): boolean {
    return false;
  }
}

/** Runs every request to completion under the chosen policy and reports per-token timings. */
export async function serve(model: CausalLM, requests: Request[], opts: ServeOptions): Promise<ServeResult> {
  if (!Number.isInteger(opts.slots) || opts.slots < 1) throw new InputError(`batch size ${opts.slots}: expected a positive integer`);
  checkPrompts(
    model,
    requests.map((r) => r.prompt),
  );
  const track = new Tracker(model, opts);
  const ids = requests.map((r) => track.add(r));
  // Requests with something to generate, in arrival order (stable).
  const order = ids.filter((i) => track.budget(i) > 0).sort((a, b) => track.completion(a).arrival - track.completion(b).arrival || a - b);
  const slots = Math.min(opts.slots, requests.length);
  const capacity = Math.max(...ids.map((i) => requests[i]!.prompt.length + track.budget(i)));
  const result = emptyResult(ids.map((i) => track.completion(i)));
  await runPolicy(model, track, new ListSource(order, track), { slots, capacity, policy: opts.policy }, result);
  result.seconds = track.now();
  return result;
}

/** A result with nothing run yet; the policies add their timings to it. */
export function emptyResult(completions: Completion[]): ServeResult {
  return { completions, policy: 'static', seconds: 0, prefillSeconds: 0, decodeSeconds: 0, decodeSteps: 0, decodeTokens: 0 };
}

/**
 * Serves what `source` gives until it runs dry: continuous batching over `slots` rows of `capacity`
 * tokens where the model's caches adopt rows, static batches of up to `slots` otherwise.
 */
export async function runPolicy(
  model: CausalLM,
  track: Tracker,
  source: RequestSource,
  o: { slots: number; capacity: number; policy?: Policy },
  result: ServeResult,
): Promise<void> {
  if ((o.policy ?? 'continuous') === 'continuous' && model.capabilities.adoptRows) {
    result.policy = 'continuous';
    const cache = model.createCache(o.slots, o.capacity);
    const prefill = model.createCache(1, o.capacity);
    try {
      await decodeSlots(model, track, source, cache, prefill, result);
    } finally {
      prefill.release();
      cache.release();
    }
  } else {
    result.policy = 'static';
    await staticBatches(model, track, source, o.slots, result);
  }
}

/** Continuous batching over `cache`'s rows, each request prefilled alone in `prefill` and moved into a free row. */
async function decodeSlots(
  model: CausalLM,
  track: Tracker,
  source: RequestSource,
  cache: SequenceState,
  prefill: SequenceState,
  result: ServeResult,
) {
  const slot: number[] = new Array(cache.batch).fill(-1); // request in each slot, -1 when free
  const free = (b: number) => {
    slot[b] = -1;
    cache.truncate(b, 0);
  };
  while (source.more() || slot.some((i) => i >= 0)) {
    // A cancelled request leaves its slot before anything else runs.
    slot.forEach((i, b) => {
      if (i >= 0 && source.cancelled(i)) {
        track.cancel(i);
        free(b);
      }
    });
    // Admit every arrived request there is a free slot for, each prefilled alone.
    for (let b = slot.indexOf(-1); b >= 0; b = slot.indexOf(-1)) {
      const i = source.take(track.now());
      if (i < 0) break;
      if (source.cancelled(i)) {
        track.cancel(i);
        continue;
      }
      const prompt = track.request(i).prompt;
      prefill.truncate(0, 0);
      const t0 = performance.now();
      const logits = await model.forward(prefill, [prompt], { logits: 'last' });
      result.prefillSeconds += (performance.now() - t0) / 1000;
      if (track.choose(i, logits.at(0, prompt.length - 1))) continue;
      cache.adoptRow(b, prefill, 0);
      slot[b] = i;
    }
    if (slot.every((i) => i < 0)) {
      if (source.more()) await source.wait();
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
      if (track.choose(i, logits.at(b, 0))) free(b);
    });
  }
}

async function staticBatches(model: CausalLM, track: Tracker, source: RequestSource, slots: number, result: ServeResult): Promise<void> {
  while (source.more()) {
    const first = source.take(track.now());
    if (first < 0) {
      await source.wait();
      continue;
    }
    // Everything waiting (up to the batch size) goes in; later arrivals wait for the whole batch.
    const batch = [first];
    for (let i = 0; batch.length < slots && (i = source.take(track.now())) >= 0; ) batch.push(i);
    const live = batch.filter((i) => {
      if (source.cancelled(i)) track.cancel(i);
      return !source.cancelled(i);
    });
    if (live.length > 0) await staticBatch(model, track, source, live, result);
  }
}

/** One right-padded batch, prefilled together and decoded until every row is done. */
async function staticBatch(model: CausalLM, track: Tracker, source: RequestSource, batch: number[], result: ServeResult) {
  const prompts = batch.map((i) => track.request(i).prompt);
  const cache = model.createCache(batch.length, Math.max(...batch.map((i, b) => prompts[b]!.length + track.budget(i))));
  try {
    await decodeBatch(model, track, source, batch, cache, result);
  } finally {
    cache.release();
  }
}

async function decodeBatch(
  model: CausalLM,
  track: Tracker,
  source: RequestSource,
  batch: number[],
  cache: SequenceState,
  result: ServeResult,
): Promise<void> {
  const prompts = batch.map((i) => track.request(i).prompt);
  let t0 = performance.now();
  let logits = await model.forward(cache, prompts, { logits: 'last' });
  result.prefillSeconds += (performance.now() - t0) / 1000;
  const done = batch.map((i, b) => track.choose(i, logits.at(b, prompts[b]!.length - 1)));
  // Each row's last token, kept here: a finished request's bookkeeping may already be gone.
  const last = batch.map((i, b) => (done[b] ? 0 : track.last(i)));
  while (!done.every(Boolean)) {
    batch.forEach((i, b) => {
      if (!done[b] && source.cancelled(i)) {
        track.cancel(i);
        done[b] = true;
      }
    });
    if (done.every(Boolean)) break;
    // Finished rows keep stepping on their last token so the batch stays rectangular; they are cut
    // back after each step so that they never outgrow the cache.
    t0 = performance.now();
    logits = await model.forward(
      cache,
      last.map((id) => [id]),
    );
    result.decodeSeconds += (performance.now() - t0) / 1000;
    result.decodeSteps++;
    batch.forEach((i, b) => {
      if (done[b]) return cache.truncate(b, cache.lengths[b]! - 1);
      result.decodeTokens++;
      done[b] = track.choose(i, logits.at(b, 0));
      if (!done[b]) last[b] = track.last(i);
    });
  }
}
