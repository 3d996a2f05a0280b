// `llmopt serve` as a user runs it: the built CLI on a fixture export given a chat template, driven by the
// official openai client. Completions (whole, streamed, with logprobs and stop strings) equal `llmopt generate`'s
// greedy output token for token; chat completions apply the template and stop at its end of turn; every bad
// request gets a JSON error with the right status while the server keeps serving.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { GQA, MHA, exportedArtifact, runCli } from '../support.js';
import { startServer, TURN_TEMPLATE, withChatTemplate, type Served } from './helpers.js';

const KEY = 'sk-test-key';
const PROMPT = 'Once upon a time';
let served: Served;
let client: OpenAI;
let artifact: string;
let plain: string;
/** `llmopt generate --chat` on the template copy: the reply up to its end-of-turn token. */
let chatIds: number[];
let chatText: string;

interface GenerateJson {
  outputs: Array<{ ids: number[]; text: string; stopReason: string; promptIds: number[] }>;
}

const generated = new Map<string, GenerateJson['outputs'][number]>();
/** `llmopt generate --json` (each distinct call spawned once). */
function generateJson(dir: string, args: string[]): GenerateJson['outputs'][number] {
  const key = JSON.stringify([dir, args]);
  if (!generated.has(key)) {
    const r = runCli(['generate', dir, '--json', ...args]);
    assert.equal(r.code, 0, r.stderr);
    generated.set(key, (JSON.parse(r.stdout) as GenerateJson).outputs[0]!);
  }
  return generated.get(key)!;
}

before(async () => {
  plain = await exportedArtifact(GQA, 'fused');
  // The end-of-turn token is one the model emits a few tokens into its reply, so stopping there shows.
  const open = generateJson(withChatTemplate(plain, TURN_TEMPLATE), ['--chat', '-p', 'hello there', '-n', '16']);
  const k = open.ids.findIndex((id, i) => i >= 2 && !open.ids.slice(0, i).includes(id) && id > 2);
  assert.ok(k > 0, `no end-of-turn candidate in ${open.ids}`);
  artifact = withChatTemplate(plain, TURN_TEMPLATE, { '<|end|>': open.ids[k]! });
  const chat = generateJson(artifact, ['--chat', '-p', 'hello there', '-n', '16']);
  assert.deepEqual(chat.ids, open.ids.slice(0, k + 1), 'generate --chat stops at the template end of turn');
  assert.equal(chat.stopReason, 'eos');
  chatIds = chat.ids;
  chatText = chat.text;
  served = await startServer([artifact, '--api-key', KEY, '--slots', '3', '--threads', '1']);
  client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: KEY, maxRetries: 0 });
});

after(async () => {
  if (served) assert.equal(await served.stop(), 0, served.stderr());
});

test('completions, whole and streamed, equal llmopt generate greedy token for token', async () => {
  const want = generateJson(artifact, ['-p', PROMPT, '-n', '20']);
  const whole = await client.completions.create({ model: 'artifact', prompt: PROMPT, max_tokens: 20, temperature: 0, logprobs: 1 });
  assert.equal(whole.choices[0]!.text, want.text);
  assert.equal(whole.usage!.completion_tokens, want.ids.length);
  assert.equal(whole.usage!.prompt_tokens, want.promptIds.length);
  assert.equal(whole.choices[0]!.finish_reason, want.stopReason === 'eos' ? 'stop' : 'length');
  const lp = whole.choices[0]!.logprobs!;
  assert.equal(lp.tokens!.length, want.ids.length, 'one logprob per generated token');
  assert.equal(lp.tokens!.join(''), want.text);
  assert.ok(lp.token_logprobs!.every((v) => v <= 0 && Number.isFinite(v)));
  // Greedy: the chosen token is the most likely one.
  lp.top_logprobs!.forEach((top, i) => assert.ok(Math.max(...Object.values(top)) <= lp.token_logprobs![i]! + 1e-9));

  const stream = await client.completions.create({ model: 'artifact', prompt: PROMPT, max_tokens: 20, temperature: 0, stream: true });
  let text = '';
  let finish: string | null = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, want.text);
  assert.equal(finish, whole.choices[0]!.finish_reason);
});

test('a stop string ends the completion before it, streamed or not', async () => {
  const want = generateJson(artifact, ['-p', PROMPT, '-n', '20']).text;
  const stop = want.slice(3, 5);
  const cut = want.slice(0, want.indexOf(stop));
  const whole = await client.completions.create({ model: 'artifact', prompt: PROMPT, max_tokens: 20, temperature: 0, stop });
  assert.equal(whole.choices[0]!.text, cut);
  assert.equal(whole.choices[0]!.finish_reason, 'stop');
  let text = '';
  for await (const c of await client.completions.create({
    model: 'artifact',
    prompt: PROMPT,
    max_tokens: 20,
    temperature: 0,
    stop,
    stream: true,
  }))
    text += c.choices[0]?.text ?? '';
  assert.equal(text, cut);
});

test('chat completions apply the template and stop at its end of turn, like generate --chat', async () => {
  const messages = [{ role: 'user' as const, content: 'hello there' }];
  const whole = await client.chat.completions.create({ model: 'artifact', messages, max_tokens: 16, temperature: 0 });
  assert.equal(whole.choices[0]!.message.content, chatText);
  assert.equal(whole.choices[0]!.finish_reason, 'stop');
  assert.equal(whole.usage!.completion_tokens, chatIds.length);
  let text = '';
  for await (const c of await client.chat.completions.create({ model: 'artifact', messages, max_tokens: 16, temperature: 0, stream: true }))
    text += c.choices[0]?.delta?.content ?? '';
  assert.equal(text, chatText);
});

test('seeded sampling is reproducible', async () => {
  const ask = () => client.completions.create({ model: 'artifact', prompt: PROMPT, max_tokens: 12, temperature: 0.9, top_p: 0.9, seed: 7 });
  assert.equal((await ask()).choices[0]!.text, (await ask()).choices[0]!.text);
});

test('models, health and metrics', async () => {
  const models = await client.models.list();
  assert.deepEqual(
    models.data.map((m) => m.id),
    ['artifact'],
  );
  assert.equal((await fetch(`${served.url}/health`)).status, 200, 'health needs no key');
  const metrics = await (await fetch(`${served.url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();
  for (const name of [
    'llmopt_requests_total',
    'llmopt_generated_tokens_total',
    'llmopt_queue_length',
    'llmopt_time_to_first_token_seconds_bucket',
  ])
    assert.match(metrics, new RegExp(`^${name}`, 'm'));
  assert.match(metrics, /^llmopt_inter_token_latency_seconds_count [1-9]/m);
});

/** Posts a raw body and returns the status and the parsed JSON error. */
async function post(path: string, body: string, headers: Record<string, string> = { authorization: `Bearer ${KEY}` }) {
  const r = await fetch(`${served.url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  const json = (await r.json()) as { error?: { message: string } };
  return { status: r.status, message: json.error?.message ?? '' };
}

for (const [what, path, body, status, message, headers] of [
  ['malformed JSON', '/v1/completions', '{"prompt": "a",', 400, /not valid JSON/],
  ['a wrong-typed field', '/v1/completions', JSON.stringify({ prompt: 'a', max_tokens: 'ten' }), 400, /max_tokens/],
  ['a wrong-typed chat message', '/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 5 }] }), 400, /messages/],
  ['max_tokens beyond the context', '/v1/completions', JSON.stringify({ prompt: 'a', max_tokens: 100000 }), 400, /context is 256 tokens/],
  ['a prompt longer than the context', '/v1/completions', JSON.stringify({ prompt: 'abc '.repeat(300) }), 400, /the prompt is \d+ tokens/],
  ['an unknown model', '/v1/completions', JSON.stringify({ model: 'gpt-5', prompt: 'a' }), 404, /gpt-5.*not served/],
  ['a missing API key', '/v1/completions', JSON.stringify({ prompt: 'a' }), 401, /API key/, {}],
  ['a wrong API key', '/v1/completions', JSON.stringify({ prompt: 'a' }), 401, /API key/, { authorization: 'Bearer nope' }],
  ['an oversized body', '/v1/completions', JSON.stringify({ prompt: 'a'.repeat(2 << 20) }), 413, /too large/i],
] as const) {
  test(`${what}: ${status} with a JSON error, and the server keeps serving`, async () => {
    const r = await post(path, body, headers as Record<string, string> | undefined);
    assert.equal(r.status, status);
    assert.match(r.message, message);
    const ok = await client.completions.create({ model: 'artifact', prompt: PROMPT, max_tokens: 2, temperature: 0 });
    assert.equal(ok.choices.length, 1);
  });
}

test('chat on a model without a chat template: a 400 from serve, exit 2 from generate and eval', async () => {
  const r = runCli(['generate', plain, '--chat', '-p', 'hi']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /tokenizer_config\.json: no chat_template/);
  const e = runCli(['eval', plain, '--chat', '--data', 'fixtures/text/sample.txt', '--limit', '1']);
  assert.equal(e.code, 2);
  assert.match(e.stderr, /no chat_template/);
  const s = await startServer([plain, '--threads', '1']);
  try {
    const c = await fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(c.status, 400);
    assert.match(((await c.json()) as { error: { message: string } }).error.message, /no chat template/);
  } finally {
    assert.equal(await s.stop(), 0);
  }
});

test('eval --chat scores the templated text', () => {
  const args = ['--data', 'fixtures/text/sample.txt', '--limit', '2', '--json'];
  const chat = runCli(['eval', artifact, '--chat', ...args]);
  assert.equal(chat.code, 0, chat.stderr);
  const flat = runCli(['eval', artifact, ...args]);
  assert.ok(JSON.parse(chat.stdout).tokens > JSON.parse(flat.stdout).tokens, 'the template adds tokens around each document');
});

test('--draft: speculative decoding behind the same API gives the greedy output; logprobs are refused', async () => {
  const want = generateJson(artifact, ['-p', PROMPT, '-n', '20']);
  const s = await startServer([artifact, '--draft', await exportedArtifact(MHA, 'fused'), '--draft-tokens', '3', '--threads', '1']);
  try {
    const c = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'none', maxRetries: 0 });
    const ask = { model: 'artifact', prompt: PROMPT, max_tokens: 20, temperature: 0 } as const;
    const whole = await c.completions.create(ask);
    assert.equal(whole.choices[0]!.text, want.text);
    assert.equal(whole.usage!.completion_tokens, want.ids.length);
    let text = '';
    for await (const chunk of await c.completions.create({ ...ask, stream: true })) text += chunk.choices[0]?.text ?? '';
    assert.equal(text, want.text);
    const chat = await c.chat.completions.create({
      model: 'artifact',
      messages: [{ role: 'user', content: 'hello there' }],
      max_tokens: 16,
      temperature: 0,
    });
    assert.equal(chat.choices[0]!.message.content, chatText);
    await assert.rejects(
      c.completions.create({ ...ask, logprobs: 1 }),
      (e: Error & { status?: number }) => e.status === 400 && /--draft/.test(e.message),
    );
  } finally {
    assert.equal(await s.stop(), 0, s.stderr());
  }
});
