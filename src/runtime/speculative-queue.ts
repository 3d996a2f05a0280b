// The live queue of `llmopt serve --draft`: speculative decoding runs at batch 1 (speculative.ts), so
// requests are served one at a time in arrival order, each streaming its tokens; a cancelled request
// (its client left) stops at the next token or round, and one cancelled while waiting never starts.
import type { LiveHandlers, LiveTicket, TokenScheduler } from './live-scheduler.js';
import type { CausalLM } from './model.js';
import type { Request } from './scheduler.js';
import { PROMPT_LOOKUP } from './prompt-lookup.js';
import { checkDraft, speculativeGenerate, type Draft } from './speculative.js';

export interface SpeculativeQueueOptions {
  /** K: tokens the draft proposes per target pass. */
  draftTokens: number;
  /** Tokens a request may hold (default the smaller of the two models' contexts). */
  capacity?: number;
  /** Default stop ids (default the target's eos ids); requests add their own. */
  stopTokens?: number[];
}

interface Waiting {
  id: number;
  request: Request;
  handlers: LiveHandlers;
  arrival: number;
}

export class SpeculativeQueue implements TokenScheduler {
  readonly slots = 1;
  /** Speculative decoding keeps no per-token distribution of the target to report. */
  readonly logprobs = false;
  readonly context: number;
  private readonly queue: Waiting[] = [];
  private readonly cancels = new Set<number>();
  private next = 0;
  private active = 0;
  private open = true;
  private wake: (() => void) | null = null;
  private readonly start = performance.now();
  private readonly loop: Promise<void>;

  constructor(
    readonly target: CausalLM,
    readonly draft: Draft,
    readonly opts: SpeculativeQueueOptions,
  ) {
    checkDraft(target, draft);
    this.context = Math.min(
      opts.capacity ?? Infinity,
      target.spec.maxPositions,
      draft === PROMPT_LOOKUP ? Infinity : draft.spec.maxPositions,
    );
    this.loop = this.run();
  }

  get waiting(): number {
    return this.queue.length;
  }

  get inFlight(): number {
    return this.active;
  }

  submit(request: Request, handlers: LiveHandlers): LiveTicket {
    if (!this.open) throw new Error('the queue is closed');
    const id = this.next++;
    this.queue.push({ id, request, handlers, arrival: (performance.now() - this.start) / 1000 });
    this.active++;
    this.poke();
    return { id, cancel: () => this.cancels.add(id) };
  }

  async close(): Promise<void> {
    this.open = false;
    this.poke();
    await this.loop;
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async run(): Promise<void> {
    while (this.open || this.queue.length > 0) {
      const w = this.queue.shift();
      if (!w) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      await this.serveOne(w);
    }
  }

  private async serveOne({ id, request, handlers, arrival }: Waiting): Promise<void> {
    const completion = { tokens: [] as number[], stopReason: 'cancelled' as const, arrival, tokenTimes: [] as number[] };
    const done = (c: Parameters<LiveHandlers['onDone']>[0], error?: Error) => {
      this.cancels.delete(id);
      this.active--;
      try {
        handlers.onDone(c, error);
      } catch {
        // The request is over either way; its handler's failure is its own.
      }
    };
    if (this.cancels.has(id)) return done(completion);
    try {
      const s = await speculativeGenerate(this.target, this.draft, request.prompt, {
        draftTokens: this.opts.draftTokens,
        maxNewTokens: Math.min(request.maxNewTokens, this.context - request.prompt.length),
        sampling: request.sampling ?? { temperature: 0, topK: 0, topP: 1, seed: 0 },
        stopTokens: [...(this.opts.stopTokens ?? this.target.spec.eosTokenIds), ...(request.stopTokens ?? [])],
        onToken: (token) => {
          completion.tokens.push(token);
          completion.tokenTimes.push((performance.now() - this.start) / 1000);
          try {
            handlers.onToken(token, undefined);
          } catch {
            this.cancels.add(id);
          }
        },
        cancelled: () => this.cancels.has(id),
      });
      done({ ...completion, tokens: s.tokens, stopReason: s.stopReason });
    } catch (e) {
      done(completion, e instanceof Error ? e : new Error(String(e)));
    }
  }
}
