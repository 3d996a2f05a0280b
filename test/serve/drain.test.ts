// `llmopt serve` shutting down: SIGTERM lets what is in flight finish (one streamed, two queued behind it on one
// slot), answers new requests 503, and the process exits 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { GQA, exportedArtifact } from '../support.js';
import { startServer } from './helpers.js';

test('SIGTERM drains: requests in flight finish, new ones get 503, the process exits 0', { timeout: 60_000 }, async () => {
  const served = await startServer([await exportedArtifact(GQA, 'fused'), '--slots', '1', '--threads', '1']);
  const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'none', maxRetries: 0 });
  // One slot and three long requests: the last ones wait in the queue while the first decodes.
  const long = { model: 'artifact', prompt: 'once upon a time', max_tokens: 240, temperature: 0 } as const;
  const first = await client.completions.create({ ...long, stream: true });
  const queued = [client.completions.create(long), client.completions.create(long)];
  const reader = (async () => {
    let text = '';
    let finish: string | null = null;
    for await (const c of first) {
      if (text === '' && finish === null) {
        // All three requests are in before the signal.
        for (let t = 0; t < 200; t++) {
          const m = await (await fetch(`${served.url}/metrics`)).text();
          if (/^llmopt_requests_in_flight 3$/m.test(m)) break;
          await new Promise((r) => setTimeout(r, 10));
        }
        served.proc.kill('SIGTERM');
        await new Promise((r) => setTimeout(r, 150));
        const refused = await fetch(`${served.url}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: 'late', max_tokens: 2 }),
        });
        assert.equal(refused.status, 503);
        assert.match(((await refused.json()) as { error: { message: string } }).error.message, /shutting down/);
      }
      text += c.choices[0]?.text ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    return finish;
  })();
  assert.equal(await reader, 'length');
  for (const r of await Promise.all(queued)) assert.equal(r.usage!.completion_tokens, 240);
  assert.equal(await served.exited, 0, served.stderr());
});
