// Serving benchmark (`npm run bench:serve`): the cost of the HTTP layer. One seeded trace (mixed prompt and
// output lengths, everything waiting from the start) runs through the continuous-batching scheduler in
// process (what `llmopt bench` measures) and through `llmopt serve` (the built CLI, streamed by `--clients`
// concurrent HTTP clients), alternately, several repetitions; throughput, end-to-end p50/p95 and their
// ratios (serve / in process). Where ../shared/tools/llama.cpp exists, llama-server runs the same weights (llmopt's
// F32 GGUF of the model), the same trace, slots and threads, interleaved too. Flags: --model <hf folder> (default
// ../shared aidreams-260k, else the GQA fixture), --requests 256, --clients 64, --slots 8, --reps 3, --threads 1.
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportModel } from '../src/passes/export.js';
import { exportGguf } from '../src/passes/export/gguf.js';
import { DecoderModel } from '../src/runtime/decoder.js';
import { seededRandom } from '../src/runtime/sampling.js';
import { measureServing } from '../src/bench/serving.js';
import { percentile } from '../src/bench/stats.js';
import type { Request } from '../src/runtime/scheduler.js';
import { describeMachine, flag, formatStats, log, machine, stats, textFlag } from './bench/common.js';

const ROOT = join(import.meta.dirname, '..');
const AIDREAMS = join(ROOT, '..', 'shared', 'models', 'aidreams-260k');
const source = textFlag('model') ?? (existsSync(AIDREAMS) ? AIDREAMS : join(ROOT, 'fixtures', 'tiny-llama-gqa'));
const requests = flag('requests', 256);
const clients = flag('clients', 64);
const slots = flag('slots', 8);
const reps = flag('reps', 3);
const threads = flag('threads', 1);

interface Run {
  tokens: number;
  seconds: number;
  /** End-to-end p50 and p95, ms. */
  e2e: number[];
}

/** The trace: prompts of 4-36 tokens, 8-40 new tokens each, seeded. */
function trace(vocab: number, context: number): Request[] {
  const random = seededRandom(17);
  return Array.from({ length: requests }, () => {
    const length = 4 + Math.floor(random() * 33);
    const prompt = [1, ...Array.from({ length: length - 1 }, () => 3 + Math.floor(random() * (vocab - 3)))];
    return { prompt, maxNewTokens: Math.min(8 + Math.floor(random() * 33), context - length) };
  });
}

async function inProcess(model: DecoderModel, trace: Request[]): Promise<Run> {
  const r = await measureServing(model, trace, 'continuous', slots);
  return { tokens: r.generatedTokens, seconds: r.seconds, e2e: [r.endToEnd.p50, r.endToEnd.p95] };
}

/**
 * One POST, on a connection of its own that the request closes (`Connection: close`, no agent): cpp-httplib closes an
 * idle keep-alive connection after a few seconds while a pooling client may pick it for the next request, and a POST
 * is never retried, so reusing connections measured a race instead of the servers. Both servers get the same client.
 */
function post(url: string, body: unknown, timeoutMs: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = httpRequest(url, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), connection: 'close' },
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** Streams every request of the trace from `clients` concurrent HTTP clients; end-to-end per request. */
async function overHttp(url: string, trace: Request[]): Promise<Run> {
  const t0 = performance.now();
  const e2e: number[] = [];
  let tokens = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, w) => {
      for (let j = w; j < trace.length; j += clients) {
        const { prompt, maxNewTokens } = trace[j]!;
        const body = { prompt, max_tokens: maxNewTokens, temperature: 0, stream: true, stream_options: { include_usage: true } };
        const res = await post(`${url}/v1/completions`, body, 120_000).catch((e: Error) => {
          throw new Error(`${url}: request ${j}: ${e.message}`);
        });
        // llmopt serve and llama-server both report the count (usage; llama-server's timings too).
        const usage = /"completion_tokens":(\d+)/.exec(res.text) ?? /"predicted_n":(\d+)/.exec(res.text);
        if (res.status !== 200 || !usage) throw new Error(`request ${j}: ${res.status} ${res.text.slice(0, 200)}`);
        tokens += Number(usage[1]);
        e2e.push(performance.now() - t0);
      }
    }),
  );
  return { tokens, seconds: (performance.now() - t0) / 1000, e2e: [percentile(e2e, 50), percentile(e2e, 95)] };
}

async function startServe(artifact: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const proc = spawn(process.execPath, [
    join(ROOT, 'bin', 'llmopt.js'),
    'serve',
    artifact,
    '--port',
    '0',
    '--slots',
    String(slots),
    '--threads',
    String(threads),
  ]);
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.on('exit', (code) => reject(new Error(`llmopt serve exited ${code}`)));
  });
  const stop = () =>
    new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill('SIGTERM');
    });
  return { url, stop };
}

const LLAMA_SERVER = join(ROOT, '..', 'shared', 'tools', 'llama.cpp', 'bin', 'llama-server');

/** A free TCP port on 127.0.0.1 (llama-server takes no port 0). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** llama-server on `gguf`: as many parallel slots, each with the model's context, `threads` threads, F32 KV cache. */
async function startLlamaServer(gguf: string, context: number): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const args = ['-m', gguf, '--host', '127.0.0.1', '--port', String(port), '-np', String(slots), '-c', String(slots * context)];
  // An HTTP thread per client: with fewer, clients that keep their connection open starve the others (cpp-httplib).
  const http = ['--threads-http', String(clients)];
  const proc: ChildProcess = spawn(LLAMA_SERVER, [...args, '-t', String(threads), '-tb', String(threads), ...http, '--no-warmup'], {
    stdio: 'ignore',
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (proc.exitCode !== null) throw new Error(`llama-server exited ${proc.exitCode}`);
    const ok = await fetch(`${url}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const stop = () =>
    new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill('SIGTERM');
    });
  return { url, stop };
}

const work = mkdtempSync(join(tmpdir(), 'llmopt-bench-serve-'));
try {
  const artifact = join(work, 'artifact');
  await exportModel(source, artifact, { attention: 'fused', layout: 'llmopt' });
  const model = await DecoderModel.open(artifact, { device: 'cpu', threads });
  const server = await startServe(artifact);
  let peer: { url: string; stop: () => Promise<void> } | null = null;
  if (existsSync(LLAMA_SERVER)) {
    const gguf = join(work, 'model-f32.gguf');
    await exportGguf(source, gguf, { dtype: 'f32' });
    peer = await startLlamaServer(gguf, model.spec.maxPositions);
  } else log(`${LLAMA_SERVER} is absent: no llama-server comparison`);
  try {
    const t = trace(model.spec.vocabSize, model.spec.maxPositions);
    log('warming up');
    await inProcess(model, t.slice(0, 32)); // warm-up, every side
    await overHttp(server.url, t.slice(0, 32));
    if (peer) await overHttp(peer.url, t.slice(0, 32));
    const local: Run[] = [];
    const http: Run[] = [];
    const llama: Run[] = [];
    for (let r = 0; r < reps; r++) {
      local.push(await inProcess(model, t));
      http.push(await overHttp(server.url, t));
      if (peer) llama.push(await overHttp(peer.url, t));
    }
    const tps = (runs: Run[]) => stats(runs.map((x) => x.tokens / x.seconds));
    const ratio = stats(local.map((l, i) => http[i]!.tokens / http[i]!.seconds / (l.tokens / l.seconds)));
    const e2e = (runs: Run[], k: number) => formatStats(stats(runs.map((x) => x.e2e[k]!)), 0);
    const lines = [
      describeMachine(machine()),
      `model: ${source}; ${requests} requests, ${clients} HTTP clients, ${slots} slots, ${threads} thread(s), ${reps} repetitions`,
      `in process (llmopt bench's continuous batching): ${formatStats(tps(local))} tok/s, end-to-end p50 ${e2e(local, 0)} ms, p95 ${e2e(local, 1)} ms`,
      `llmopt serve (HTTP, streamed): ${formatStats(tps(http))} tok/s, end-to-end p50 ${e2e(http, 0)} ms, p95 ${e2e(http, 1)} ms`,
      `throughput serve / in process: ${formatStats(ratio, 3)}`,
    ];
    if (peer) {
      const vsPeer = stats(http.map((h, i) => h.tokens / h.seconds / (llama[i]!.tokens / llama[i]!.seconds)));
      lines.push(
        `llama-server (same weights as F32 GGUF, ${slots} slots): ${formatStats(tps(llama))} tok/s, ` +
          `end-to-end p50 ${e2e(llama, 0)} ms, p95 ${e2e(llama, 1)} ms`,
        `throughput llmopt serve / llama-server: ${formatStats(vsPeer, 3)}`,
      );
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await server.stop();
    await peer?.stop();
    await model.release();
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
