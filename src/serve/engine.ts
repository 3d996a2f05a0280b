// One generation request of the server, from token ids to text: submitted to the live queue, its
// tokens decoded incrementally, stop strings matched on the text (held back while they might still be
// starting), and the request cancelled when its client leaves or a stop string ends it.
import { StreamingDecoder, type TextTokenizer } from '../formats/tokenizer.js';
import type { TokenScheduler } from '../runtime/live-scheduler.js';
import type { SamplingOptions, StopReason } from '../runtime/sampling.js';
import type { Metrics } from './metrics.js';
import { HttpError, type FinishReason } from './openai.js';

export interface GenerationRequest {
  prompt: number[];
  maxTokens: number;
  sampling: SamplingOptions;
  /** Texts that end the output (not included in it). */
  stop: string[];
  /** Top alternatives to report per token (undefined: no logprobs). */
  logprobs?: number;
  /** Stop ids besides EOS (the chat template's end of turn). */
  stopTokens?: number[];
}

/** One token as the client sees it: the text it added, its logprob and the top alternatives' texts. */
export interface TokenInfo {
  text: string;
  logprob: number;
  top: Record<string, number>;
}

export interface GenerationResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  /** Per token, when logprobs were asked for. */
  logprobs: TokenInfo[] | null;
}

/** Where the stop string search starts: text before it can no longer be the start of a stop string. */
function safeLength(text: string, stops: string[]): number {
  let keep = text.length;
  for (const s of stops)
    for (let k = Math.min(s.length - 1, text.length); k > 0; k--)
      if (text.endsWith(s.slice(0, k))) {
        keep = Math.min(keep, text.length - k);
        break;
      }
  return keep;
}

export class Engine {
  constructor(
    readonly scheduler: TokenScheduler,
    readonly tokenizer: TextTokenizer,
    readonly metrics: Metrics,
  ) {}

  /** Tokens a request may hold (prompt and output). */
  get context(): number {
    return this.scheduler.context;
  }

  /** Refuses a prompt or a max_tokens that the context cannot hold (400, as OpenAI answers it). */
  checkLength(promptTokens: number, maxTokens: number | null): void {
    const c = this.context;
    if (promptTokens >= c)
      throw new HttpError(
        400,
        `the prompt is ${promptTokens} tokens; this model's context is ${c} tokens`,
        undefined,
        'prompt',
        'context_length_exceeded',
      );
    if (maxTokens !== null && promptTokens + maxTokens > c)
      throw new HttpError(
        400,
        `this model's context is ${c} tokens; the prompt (${promptTokens}) and max_tokens (${maxTokens}) ` +
          `ask for ${promptTokens + maxTokens}`,
        undefined,
        'max_tokens',
        'context_length_exceeded',
      );
  }

  /**
   * Runs one request; `onDelta` gets the text as it becomes final. Resolves when it is over, also when
   * `signal` aborts (the client left: the slot is freed at once and the result is what was made).
   */
  run(r: GenerationRequest, onDelta: (text: string, token: TokenInfo | null) => void, signal: AbortSignal): Promise<GenerationResult> {
    const decoder = new StreamingDecoder(this.tokenizer);
    const arrived = performance.now();
    let last = arrived;
    let text = ''; // decoded so far
    let sent = 0; // characters of `text` handed to onDelta
    let stopped = false;
    let count = 0;
    let failed: Error | null = null;
    const infos: TokenInfo[] = [];
    const stopAt = (): number => {
      let at = -1;
      for (const s of r.stop) {
        const i = text.indexOf(s, Math.max(0, sent - s.length));
        if (i >= 0 && (at < 0 || i < at)) at = i;
      }
      return at;
    };
    this.metrics.promptTokens += r.prompt.length;
    return new Promise((resolve, reject) => {
      const ticket = this.scheduler.submit(
        { prompt: r.prompt, maxNewTokens: r.maxTokens, sampling: r.sampling, stopTokens: r.stopTokens, logprobs: r.logprobs },
        {
          onToken: (id, lp) => {
            if (failed) return;
            try {
              const now = performance.now();
              this.metrics.generatedTokens++;
              if (count++ === 0) this.metrics.timeToFirstToken.observe((now - arrived) / 1000);
              else this.metrics.interTokenLatency.observe((now - last) / 1000);
              last = now;
              if (stopped) return;
              const delta = decoder.push(id);
              text += delta;
              let info: TokenInfo | null = null;
              if (lp) {
                const top: Record<string, number> = {};
                for (const t of lp.top) top[this.tokenizer.decode([t.id], false)] = t.logprob;
                info = { text: delta, logprob: lp.logprob, top };
                infos.push(info);
              }
              const at = r.stop.length > 0 ? stopAt() : -1;
              if (at >= 0) {
                text = text.slice(0, at);
                stopped = true;
                ticket.cancel();
              }
              const upTo = stopped ? text.length : safeLength(text, r.stop);
              if (upTo > sent || info) {
                onDelta(text.slice(sent, Math.max(sent, upTo)), info);
                sent = Math.max(sent, upTo);
              }
            } catch (e) {
              // A failure of this request alone (its text or its client) never reaches the shared batch loop.
              failed = e as Error;
              ticket.cancel();
            }
          },
          onDone: (c, error) => {
            signal.removeEventListener('abort', abort);
            if (error || failed) return reject(error ?? failed);
            try {
              if (!stopped) {
                text += decoder.flush();
                if (text.length > sent) onDelta(text.slice(sent), null);
              }
            } catch (e) {
              return reject(e);
            }
            resolve({
              text,
              tokens: c.tokens,
              finishReason: finishReason(c.stopReason, stopped),
              logprobs: r.logprobs !== undefined ? infos : null,
            });
          },
        },
      );
      const abort = () => ticket.cancel();
      if (signal.aborted) abort();
      else signal.addEventListener('abort', abort);
    });
  }
}

function finishReason(why: StopReason, stopString: boolean): FinishReason {
  return stopString || why === 'eos' ? 'stop' : 'length';
}
