// `llmopt serve` under load, and shutting down: 64 concurrent openai clients send 256 seeded requests of mixed
// lengths, each streamed and then whole at temperature 0 (the two must agree: no lost or duplicated tokens);
// a tenth of the clients leave mid-stream; the server keeps serving and its RSS stays within 10% of its
// RSS after warm-up. Sizes are small (a tiny fixture, up to 11 tokens each) so that it takes seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { GQA, exportedArtifact } from '../support.js';
import { seededRandom } from '../../src/runtime/sampling.js';
import { rssOf, startServer } from './helpers.js';

const WORDS = ['the', 'sea', 'once', 'upon', 'a', 'time', 'little', 'dragon', 'slept', 'under', 'green', 'hills', 'and', 'dreamed'];
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

interface Job {
  prompt: string;
  maxTokens: number;
}

function jobs(n: number, seed: number): Job[] {
  const random = seededRandom(seed);
  return Array.from({ length: n }, () => ({
    prompt: Array.from({ length: 1 + Math.floor(random() * 8) }, () => WORDS[Math.floor(random() * WORDS.length)]).join(' '),
    maxTokens: 2 + Math.floor(random() * 10),
  }));
}

/** Runs `list` on `clients` concurrent workers; worker w handles jobs w, w + clients, ... */
async function runClients(client: OpenAI, list: Job[], clients: number, leaves: (worker: number) => boolean) {
  const latencies: number[] = [];
  let tokens = 0;
  let left = 0;
  const mismatches: string[] = [];
  await Promise.all(
    Array.from({ length: clients }, async (_, w) => {
      for (let j = w; j < list.length; j += clients) {
        const { prompt, maxTokens } = list[j]!;
        const t0 = performance.now();
        const controller = new AbortController();
        const stream = await client.completions.create(
          { model: 'artifact', prompt, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } },
          { signal: controller.signal },
        );
        let text = '';
        let streamed = -1;
        let chunks = 0;
        try {
          for await (const c of stream) {
            text += c.choices[0]?.text ?? '';
            if (c.usage) streamed = c.usage.completion_tokens;
            if (leaves(w) && ++chunks === 2) {
              left++;
              controller.abort(); // this client goes away mid-stream
              break;
            }
          }
        } catch (e) {
          if (!controller.signal.aborted) throw e;
        }
        if (controller.signal.aborted) continue;
        latencies.push((performance.now() - t0) / 1000);
        const whole = await client.completions.create({ model: 'artifact', prompt, max_tokens: maxTokens, temperature: 0 });
        tokens += whole.usage!.completion_tokens;
        if (whole.choices[0]!.text !== text || whole.usage!.completion_tokens !== streamed)
          mismatches.push(`job ${j}: streamed ${JSON.stringify(text)} (${streamed}) vs ${JSON.stringify(whole.choices[0]!.text)}`);
      }
    }),
  );
  return { latencies, tokens, left, mismatches };
}

test('64 clients, 256 requests: streamed equals whole, leavers free their slots, RSS holds', { timeout: 240_000 }, async () => {
  const served = await startServer([await exportedArtifact(GQA, 'fused'), '--slots', '8', '--threads', '1']);
  try {
    const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'none', maxRetries: 0 });
    await runClients(client, jobs(128, 1), 64, (w) => w % 10 === 0); // warm-up: the same shapes and leavers as the run
    const warm = rssOf(served.proc.pid!);
    const t0 = performance.now();
    const run = await runClients(client, jobs(256, 2), 64, (w) => w % 10 === 0);
    const seconds = (performance.now() - t0) / 1000;
    const rss = rssOf(served.proc.pid!);
    process.stderr.write(
      `# serve load: ${run.latencies.length} streamed requests, ${run.left} left mid-stream, p50 ${percentile(run.latencies, 0.5).toFixed(3)} s, ` +
        `p95 ${percentile(run.latencies, 0.95).toFixed(3)} s, ${(run.tokens / seconds).toFixed(0)} tok/s (whole twins), ${seconds.toFixed(1)} s; ` +
        `RSS ${(warm / 2 ** 20).toFixed(1)} -> ${(rss / 2 ** 20).toFixed(1)} MiB\n`,
    );
    assert.deepEqual(run.mismatches, []);
    assert.ok(run.left >= 20, `${run.left} clients left mid-stream`);
    assert.equal(run.latencies.length + run.left, 256);
    assert.ok(rss <= warm * 1.1, `RSS grew from ${warm} to ${rss} bytes`);
    // Nothing is left in flight: the leavers' slots were freed, and the server still answers.
    const metrics = await (await fetch(`${served.url}/metrics`)).text();
    assert.match(metrics, /^llmopt_requests_in_flight 0$/m);
    assert.match(metrics, /^llmopt_queue_length 0$/m);
    const after = await client.completions.create({ model: 'artifact', prompt: 'the sea', max_tokens: 4, temperature: 0 });
    assert.equal(after.usage!.completion_tokens, 4);
  } finally {
    assert.equal(await served.stop(), 0, served.stderr());
  }
});
