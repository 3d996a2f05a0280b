// The scheduler of scheduler.ts fed by a live queue instead of a fixed list: a server submits requests
// while the batch runs, each joins as a slot frees up, streams its tokens to its own handler and can be
// cancelled (its client left, or a stop string matched), which frees its slot before the next step.
import type { CausalLM } from './model.js';
import type { TokenLogprob } from './sampling.js';
import {
  emptyResult,
  runPolicy,
  Tracker,
  type Completion,
  type Policy,
  type Request,
  type RequestSource,
  type ServeResult,
} from './scheduler.js';

export interface LiveHandlers {
  /** Every token as soon as it is chosen (with its logprob when the request asked for them). */
  onToken(id: number, logprob: TokenLogprob | undefined): void;
  /** Once, when the request is over: finished, cancelled, or failed (`error`, the batch's forward pass threw). */
  onDone(completion: Completion, error?: Error): void;
}

export interface LiveOptions {
  slots: number;
  /** Tokens a request may hold, prompt included (each slot's cache row; default the model's context). */
  capacity?: number;
  policy?: Policy;
  /** Default stop ids (default the model's eos ids); requests add their own. */
  stopTokens?: number[];
}

/** A submitted request: `cancel` ends it (its slot is freed before the next decode step). */
export interface LiveTicket {
  readonly id: number;
  cancel(): void;
}

/** What a server needs of a live queue: this continuous batch, or speculative-queue.ts's one-at-a-time drafting. */
export interface TokenScheduler {
  /** Tokens a request may hold, prompt and generation together. */
  readonly context: number;
  /** Requests waiting for a slot. */
  readonly waiting: number;
  /** Requests submitted and not yet over (waiting or decoding). */
  readonly inFlight: number;
  /** Requests decoded together. */
  readonly slots: number;
  /** Whether requests may ask for logprobs. */
  readonly logprobs: boolean;
  submit(request: Request, handlers: LiveHandlers): LiveTicket;
  /** Stops taking requests and resolves once everything submitted is over. */
  close(): Promise<void>;
}

/** One continuous-batching loop over a queue that stays open until `close`. */
export class LiveScheduler implements RequestSource, TokenScheduler {
  private readonly track: Tracker;
  private readonly handlers = new Map<number, LiveHandlers>();
  private readonly queue: number[] = [];
  private readonly cancels = new Set<number>();
  private open = true;
  private wake: (() => void) | null = null;
  private active = 0;
  private readonly loop: Promise<void>;
  /** Timings summed over everything served so far. */
  readonly totals: ServeResult = emptyResult([]);
  readonly logprobs = true;

  constructor(
    readonly model: CausalLM,
    readonly opts: LiveOptions,
  ) {
    this.track = new Tracker(
      model,
      {
        slots: opts.slots,
        stopTokens: opts.stopTokens,
        onToken: (i, id) => this.deliver(i, id),
        onDone: (i) => this.finish(i),
      },
      opts.capacity ?? model.spec.maxPositions,
    );
    this.loop = this.run();
  }

  /** Tokens a request may hold, prompt and generation together. */
  get context(): number {
    return this.track.context;
  }

  get slots(): number {
    return this.opts.slots;
  }

  /** Requests waiting for a slot. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Requests submitted and not yet over (waiting or decoding). */
  get inFlight(): number {
    return this.active;
  }

  /** Queues a request (prompt already checked against `context` by the caller). */
  submit(request: Request, handlers: LiveHandlers): LiveTicket {
    if (!this.open) throw new Error('the scheduler is closed');
    const id = this.track.add(request, this.track.now());
    this.handlers.set(id, handlers);
    this.active++;
    if (this.track.budget(id) <= 0) this.finish(id);
    else {
      this.queue.push(id);
      this.poke();
    }
    return {
      id,
      cancel: () => {
        if (this.handlers.has(id)) this.cancels.add(id);
        this.poke();
      },
    };
  }

  /** Stops taking requests and resolves once everything submitted is over. */
  async close(): Promise<void> {
    this.open = false;
    this.poke();
    await this.loop;
  }

  take(): number {
    return this.queue.shift() ?? -1;
  }

  more(): boolean {
    return this.open || this.queue.length > 0;
  }

  wait(): Promise<void> {
    if (this.queue.length > 0 || !this.open) return Promise.resolve();
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }

  cancelled(i: number): boolean {
    return this.cancels.has(i);
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** Hands a token to its request's handler; a handler that throws cancels its own request, never the batch. */
  private deliver(i: number, id: number): void {
    try {
      this.handlers.get(i)?.onToken(id, this.track.completion(i).logprobs?.at(-1));
    } catch {
      this.cancels.add(i);
    }
  }

  private finish(i: number, error?: Error): void {
    const h = this.handlers.get(i);
    if (!h) return;
    const completion = this.track.completion(i);
    this.handlers.delete(i);
    this.cancels.delete(i);
    this.track.forget(i);
    this.active--;
    try {
      h.onDone(completion, error);
    } catch {
      // The request is over either way; its handler's failure is its own.
    }
  }

  /** The batch loop; a failed forward pass fails what was in flight, and the loop starts over for the rest. */
  private async run(): Promise<void> {
    while (this.more()) {
      try {
        await runPolicy(
          this.model,
          this.track,
          this,
          { slots: this.opts.slots, capacity: this.context, policy: this.opts.policy },
          this.totals,
        );
      } catch (e) {
        const error = e instanceof Error ? e : new Error(String(e));
        for (const i of [...this.handlers.keys()]) if (!this.queue.includes(i)) this.finish(i, error);
      }
    }
  }
}
