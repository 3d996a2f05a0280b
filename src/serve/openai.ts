// The OpenAI API's shapes as the server reads and writes them: request bodies checked with zod (a field
// of the wrong type is a 400 naming it; fields llmopt does not use are ignored, as OpenAI's clients send
// many), and the completion, chat completion and error objects, streamed as chunks or whole.
import { z } from 'zod';

/** An error the HTTP layer answers with `status` and OpenAI's error object. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = status === 401 ? 'authentication_error' : status === 404 ? 'not_found_error' : 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

/** OpenAI's error body. */
export function errorBody(e: HttpError): { error: { message: string; type: string; param: string | null; code: string | null } } {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

const stop = z.union([z.string(), z.array(z.string()).max(4)]).nullish();
const sampling = {
  model: z.string().optional(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop,
  n: z.literal(1).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  max_tokens: z.number().int().min(1).nullish(),
};

export const CompletionBody = z.object({
  ...sampling,
  // One prompt (n = 1): text, or token ids.
  prompt: z.union([z.string(), z.array(z.string()).length(1), z.array(z.number().int().min(0)).min(1)]),
  logprobs: z.number().int().min(0).max(5).nullish(),
  echo: z.literal(false).nullish(),
});
export type CompletionBody = z.infer<typeof CompletionBody>;

const content = z.union([z.string(), z.array(z.object({ type: z.literal('text'), text: z.string() }))]);
export const ChatBody = z.object({
  ...sampling,
  messages: z.array(z.object({ role: z.enum(['system', 'user', 'assistant']), content })).min(1),
  max_completion_tokens: z.number().int().min(1).nullish(),
  logprobs: z.literal(false).nullish(),
});
export type ChatBody = z.infer<typeof ChatBody>;

/** Parses a body against `schema`, or throws a 400 naming the first wrong field. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body))
    throw new HttpError(400, 'the request body must be a JSON object');
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const param = issue.path.join('.') || null;
  throw new HttpError(400, `${param ?? 'body'}: ${issue.message}`, 'invalid_request_error', param);
}

/** The text of a chat message (content parts joined). */
export function messageText(c: z.infer<typeof content>): string {
  return typeof c === 'string' ? c : c.map((p) => p.text).join('');
}

export type FinishReason = 'stop' | 'length';

/** OpenAI completions' logprobs object. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Array<Record<string, number>> | null;
  text_offset: number[];
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** A text completion, whole or (finish_reason null until the last) one streamed chunk of it. */
export function completionObject(
  id: string,
  created: number,
  model: string,
  text: string,
  finish: FinishReason | null,
  logprobs: CompletionLogprobs | null,
  use?: Usage,
) {
  return {
    id,
    object: 'text_completion',
    created,
    model,
    choices: [{ index: 0, text, logprobs, finish_reason: finish }],
    ...(use ? { usage: use } : {}),
  };
}

/** A whole chat completion. */
export function chatObject(id: string, created: number, model: string, text: string, finish: FinishReason, use: Usage) {
  return {
    id,
    object: 'chat.completion',
    created,
    model,
    choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finish }],
    usage: use,
  };
}

/** One streamed chat chunk: `delta` carries the role first, then text. */
export function chatChunk(
  id: string,
  created: number,
  model: string,
  delta: { role?: 'assistant'; content?: string },
  finish: FinishReason | null,
) {
  return { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
}

/** The last streamed chunk when the client asked for usage (stream_options.include_usage): no choices. */
export function usageChunk(id: string, created: number, model: string, object: string, use: Usage) {
  return { id, object, created, model, choices: [], usage: use };
}
