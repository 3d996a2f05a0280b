// The HTTP face of `llmopt serve` on Fastify: OpenAI's /v1/completions and /v1/chat/completions (whole or
// streamed as server-sent events), /v1/models, /health and /metrics; bearer-key auth; JSON errors with
// OpenAI's shape; and a drain that finishes what is in flight while new requests get 503.
import { randomInt, randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import type { ChatTemplate } from '../formats/chat-template.js';
import type { Engine, GenerationRequest, GenerationResult, TokenInfo } from './engine.js';
import {
  ChatBody,
  chatChunk,
  chatObject,
  CompletionBody,
  completionObject,
  errorBody,
  HttpError,
  messageText,
  parseBody,
  usage,
  usageChunk,
  type CompletionLogprobs,
} from './openai.js';

export interface ServerOptions {
  /** The id clients name the model by (GET /v1/models lists it). */
  modelName: string;
  engine: Engine;
  /** The model's chat template; null: /v1/chat/completions answers 400. */
  chat: ChatTemplate | null;
  /** With a key, every request but GET /health needs `Authorization: Bearer <key>`. */
  apiKey?: string;
  /** Largest request body in bytes (413 above it). */
  bodyLimit?: number;
}

export interface LlmServer {
  app: FastifyInstance;
  /** New requests get 503 from now on; resolves once every request in flight has been answered. */
  drain(): Promise<void>;
}

/** OpenAI's default max_tokens for completions. */
const COMPLETION_MAX_TOKENS = 16;

function logprobsOf(infos: TokenInfo[], offset: number): CompletionLogprobs {
  const text_offset: number[] = [];
  for (const t of infos) {
    text_offset.push(offset);
    offset += t.text.length;
  }
  return {
    tokens: infos.map((t) => t.text),
    token_logprobs: infos.map((t) => t.logprob),
    top_logprobs: infos.map((t) => t.top),
    text_offset,
  };
}

export function buildServer(o: ServerOptions): LlmServer {
  const { engine } = o;
  const metrics = engine.metrics;
  const app = Fastify({ bodyLimit: o.bodyLimit ?? 1 << 20, logger: false, return503OnClosing: true });
  let draining = false;
  let active = 0;
  let idle: (() => void) | null = null;
  const created = Math.floor(Date.now() / 1000);

  const fail = (reply: FastifyReply, e: HttpError) => reply.status(e.status).send(errorBody(e));
  app.addHook('onRequest', async (req, reply) => {
    if (draining) return fail(reply, new HttpError(503, 'the server is shutting down', 'server_error'));
    if (o.apiKey && req.url !== '/health' && req.headers.authorization !== `Bearer ${o.apiKey}`)
      return fail(reply, new HttpError(401, 'a valid API key is required (Authorization: Bearer <key>)'));
  });
  app.addHook('onResponse', async (req, reply) => metrics.request(req.routeOptions.url ?? 'unmatched', reply.statusCode));
  app.setErrorHandler((err: Error & { statusCode?: number }, _req, reply) => {
    if (err instanceof HttpError) return fail(reply, err);
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    // Fastify's own 4xx (malformed JSON, body too large, wrong content type) carry a message worth showing.
    return fail(
      reply,
      new HttpError(status, status === 500 ? `internal error: ${err.message}` : err.message, status === 500 ? 'server_error' : undefined),
    );
  });
  app.setNotFoundHandler((req, reply) => fail(reply, new HttpError(404, `no route ${req.method} ${req.url}`)));

  app.get('/health', async (_req, reply) => reply.send({ status: 'ok' }));
  app.get('/v1/models', async () => ({ object: 'list', data: [{ id: o.modelName, object: 'model', created, owned_by: 'llmopt' }] }));
  app.get('/metrics', async (_req, reply) =>
    reply
      .type('text/plain; version=0.0.4')
      .send(metrics.render({ waiting: engine.scheduler.waiting, inFlight: engine.scheduler.inFlight, slots: engine.scheduler.slots })),
  );

  /** Counts the request in flight for drain, and aborts its generation when the client goes away. */
  async function tracked(reply: FastifyReply, work: (signal: AbortSignal) => Promise<void>) {
    const controller = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) controller.abort();
    });
    active++;
    try {
      await work(controller.signal);
    } finally {
      active--;
      if (active === 0) idle?.();
    }
  }

  function checkModel(model: string | undefined): void {
    if (model !== undefined && model !== o.modelName)
      throw new HttpError(
        404,
        `model ${JSON.stringify(model)} is not served here (this server serves ${JSON.stringify(o.modelName)})`,
        undefined,
        'model',
        'model_not_found',
      );
  }

  function common(b: CompletionBody | ChatBody, prompt: number[], maxTokens: number | null) {
    engine.checkLength(prompt.length, maxTokens);
    const stop = b.stop === undefined || b.stop === null ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop;
    return {
      prompt,
      maxTokens: maxTokens ?? engine.context - prompt.length,
      sampling: { temperature: b.temperature ?? 1, topK: 0, topP: b.top_p ?? 1, seed: b.seed ?? randomInt(2 ** 31) },
      stop: stop.filter((s) => s.length > 0),
    };
  }

  /** Starts an event stream on the raw response (after every check that can still answer with a status). */
  function sse(reply: FastifyReply, route: string): (value: unknown) => void {
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    metrics.request(route, 200);
    return (value) => {
      if (!reply.raw.destroyed) reply.raw.write(`data: ${typeof value === 'string' ? value : JSON.stringify(value)}\n\n`);
    };
  }

  async function finish(
    reply: FastifyReply,
    run: Promise<GenerationResult>,
    send: (value: unknown) => void,
    last: (r: GenerationResult) => void,
  ) {
    try {
      last(await run);
      send('[DONE]');
    } catch (e) {
      send(errorBody(new HttpError(500, `internal error: ${(e as Error).message}`, 'server_error')));
    }
    reply.raw.end();
  }

  app.post('/v1/completions', async (req, reply) => {
    const b = parseBody(CompletionBody, req.body);
    checkModel(b.model);
    const p = b.prompt;
    const prompt =
      typeof p === 'string' ? engine.tokenizer.encode(p) : typeof p[0] === 'string' ? engine.tokenizer.encode(p[0]) : (p as number[]);
    if (b.logprobs !== undefined && b.logprobs !== null && !engine.scheduler.logprobs)
      throw new HttpError(400, 'logprobs are not available with speculative decoding (--draft)', undefined, 'logprobs');
    const r: GenerationRequest = { ...common(b, prompt, b.max_tokens ?? COMPLETION_MAX_TOKENS), logprobs: b.logprobs ?? undefined };
    const id = `cmpl-${randomUUID()}`;
    const now = Math.floor(Date.now() / 1000);
    await tracked(reply, async (signal) => {
      if (!b.stream) {
        const res = await engine.run(r, () => {}, signal);
        const lp = res.logprobs ? logprobsOf(res.logprobs, 0) : null;
        return void reply.send(
          completionObject(id, now, o.modelName, res.text, res.finishReason, lp, usage(prompt.length, res.tokens.length)),
        );
      }
      const send = sse(reply, '/v1/completions');
      let offset = 0;
      const run = engine.run(
        r,
        (text, token) => {
          send(completionObject(id, now, o.modelName, text, null, token ? logprobsOf([token], offset) : null));
          offset += text.length;
        },
        signal,
      );
      await finish(reply, run, send, (res) => {
        send(completionObject(id, now, o.modelName, '', res.finishReason, null));
        if (b.stream_options?.include_usage)
          send(usageChunk(id, now, o.modelName, 'text_completion', usage(prompt.length, res.tokens.length)));
      });
    });
  });

  app.post('/v1/chat/completions', async (req, reply) => {
    const b = parseBody(ChatBody, req.body);
    checkModel(b.model);
    if (!o.chat)
      throw new HttpError(400, `model ${o.modelName} has no chat template (tokenizer_config.json chat_template): use /v1/completions`);
    const prompt = o.chat.encode(b.messages.map((m) => ({ role: m.role, content: messageText(m.content) })));
    const r: GenerationRequest = { ...common(b, prompt, b.max_completion_tokens ?? b.max_tokens ?? null), stopTokens: o.chat.endOfTurnIds };
    const id = `chatcmpl-${randomUUID()}`;
    const now = Math.floor(Date.now() / 1000);
    await tracked(reply, async (signal) => {
      if (!b.stream) {
        const res = await engine.run(r, () => {}, signal);
        return void reply.send(chatObject(id, now, o.modelName, res.text, res.finishReason, usage(prompt.length, res.tokens.length)));
      }
      const send = sse(reply, '/v1/chat/completions');
      send(chatChunk(id, now, o.modelName, { role: 'assistant', content: '' }, null));
      const run = engine.run(r, (text) => text && send(chatChunk(id, now, o.modelName, { content: text }, null)), signal);
      await finish(reply, run, send, (res) => {
        send(chatChunk(id, now, o.modelName, {}, res.finishReason));
        if (b.stream_options?.include_usage)
          send(usageChunk(id, now, o.modelName, 'chat.completion.chunk', usage(prompt.length, res.tokens.length)));
      });
    });
  });

  return {
    app,
    drain: async () => {
      draining = true;
      if (active > 0) await new Promise<void>((resolve) => (idle = resolve));
    },
  };
}
