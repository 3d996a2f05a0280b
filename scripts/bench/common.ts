// What the benchmarks under scripts/ share: flags, median and spread, child processes that report their
// own peak RSS, the machine and the synthetic ~110M checkpoint they run on, and a timed prefill/decode run.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeMachine as describeMachineLine, machineInfo, peakRssMiB, type Machine } from '../../src/bench/machine.js';

/** The process's peak RSS so far, in MiB. */
export const maxRssMiB = peakRssMiB;
import { writeSyntheticLlama, type SyntheticSpec } from '../../src/model/synthetic.js';
import type { DecoderModel, CacheKind } from '../../src/runtime/decoder.js';
import { argmax } from '../../src/runtime/sampling.js';

export const args = process.argv.slice(2);

export function flag(name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}

export function textFlag(name: string): string | null {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : null;
}

/** Progress goes to stderr, so that stdout holds only the results. */
export const log = (s: string) => process.stderr.write(`${s}\n`);

/** A realistic width (about Llama-style 110M) that stays quick to generate; the weights are random. */
export const SYNTHETIC: SyntheticSpec = {
  name: 'synthetic-768x12',
  shards: 1,
  config: {
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    num_key_value_heads: 4,
    intermediate_size: 2048,
    vocab_size: 32000,
    max_position_embeddings: 2048,
    rope_theta: 10000,
    rope_scaling: null,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: 'float32',
  },
};

/** A tiny shape that checks a benchmark script end to end in seconds (`--smoke`); its figures mean nothing. */
export const SMOKE: SyntheticSpec = {
  ...SYNTHETIC,
  name: 'synthetic-smoke',
  config: {
    ...SYNTHETIC.config,
    hidden_size: 256,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 512,
    vocab_size: 1024,
  },
};

export { stats, formatStats, type Stats } from '../../src/bench/stats.js';
export const rssMiB = () => process.memoryUsage().rss / 2 ** 20;

/** Columns padded to their widest cell, the first left-aligned and the rest right-aligned. */
export function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export const machine = () => machineInfo('cpu');
export const describeMachine = (m: Machine) => `machine: ${describeMachineLine(m)}`;

export function describeModel(parameters: number): string {
  const c = SYNTHETIC.config;
  return `model: hidden ${c.hidden_size}, ${c.num_hidden_layers} layers, heads ${c.num_attention_heads}/${c.num_key_value_heads} kv, ffn ${c.intermediate_size}, vocab ${c.vocab_size}, ${(parameters / 1e6).toFixed(1)}M parameters (float32)`;
}

/**
 * Runs `script` (an import.meta.url) again as `script --child ...childArgs` in its own process, so that
 * the peak RSS it reports is that one job's alone, and returns the JSON it prints.
 */
export function runChild(script: string, ...childArgs: string[]): any {
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(script), '--child', ...childArgs], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`child ${childArgs[0]} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** In a child: times one job and prints its result with the wall time and the process's peak RSS. */
export async function reportJob(job: () => Promise<Record<string, unknown>>): Promise<void> {
  const t0 = performance.now();
  const result = await job();
  process.stdout.write(JSON.stringify({ seconds: (performance.now() - t0) / 1000, ...result, peakRssMiB: maxRssMiB() }));
}

/**
 * Writes the synthetic checkpoint into a fresh temporary folder, runs `body` on it and removes the
 * folder afterwards (kept with --keep). Generated each run: 476 MiB is too much to commit.
 */
export async function withSyntheticCheckpoint<T>(body: (work: string, source: string) => Promise<T>): Promise<T> {
  const work = mkdtempSync(join(tmpdir(), 'llmopt-bench-'));
  try {
    log(`writing synthetic checkpoint (${SYNTHETIC.name}) ...`);
    await writeSyntheticLlama(work, SYNTHETIC);
    return await body(work, join(work, SYNTHETIC.name));
  } finally {
    if (!args.includes('--keep')) rmSync(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  }
}

/** A fixed prompt of token ids below `vocab`; each row of a batch gets its own (the same ids for any vocab >= 31003). */
export function prompt(length: number, row = 0, vocab = 32000): number[] {
  const span = Math.min(31000, vocab - 3);
  return Array.from({ length }, (_, i) => 3 + ((i * 7919 + row * 104729) % span));
}

/**
 * Prefills `batch` prompts of promptLen tokens (equal lengths, so the right padding is empty), then
 * decodes genLen tokens greedily per row. Tokens/s count every row: batch * tokens / seconds.
 */
export async function timeRun(
  model: DecoderModel,
  promptLen: number,
  genLen: number,
  batch = 1,
  kind?: CacheKind,
): Promise<{ prefill: number; decode: number }> {
  const rows = Array.from({ length: batch }, (_, b) => prompt(promptLen, b, model.spec.vocabSize));
  const cache = model.createCache(batch, promptLen + genLen, { kind });
  let t0 = performance.now();
  // Only each row's last logits, as generation (and llama.cpp) computes them: at a 152k vocab the lm_head of every
  // prompt position would cost a quarter of the prefill, and at batch 32 its 2.5 GB of logits.
  let logits = await model.forward(cache, rows, { logits: 'last' });
  const prefill = (batch * promptLen) / ((performance.now() - t0) / 1000);
  let next = rows.map((_, b) => argmax(logits.at(b, promptLen - 1)));
  t0 = performance.now();
  for (let i = 0; i < genLen; i++) {
    logits = await model.forward(
      cache,
      next.map((t) => [t]),
    );
    next = next.map((_, b) => argmax(logits.at(b, 0)));
  }
  return { prefill, decode: (batch * genLen) / ((performance.now() - t0) / 1000) };
}

/** llama.cpp's built tools in ../shared (absent on machines without it: the side-by-side benchmarks skip). */
export const LLAMACPP_BIN = join(import.meta.dirname, '..', '..', '..', 'shared', 'tools', 'llama.cpp', 'bin');

/** Bytes of an ONNX artifact as deployed: the graph and its external weights. */
export function artifactBytes(dir: string): number {
  return readdirSync(dir)
    .filter((f) => f.startsWith('model.onnx'))
    .reduce((sum, f) => sum + statSync(join(dir, f)).size, 0);
}

/**
 * llama-bench on one GGUF file, one repetition (interleaving is the caller's): prefill of promptLen tokens from an
 * empty cache, or decode of genLen tokens after `depth` tokens already in the cache. Tokens/s.
 */
export function llamaBench(gguf: string, threads: number, test: { prompt: number } | { gen: number; depth: number }): number {
  const shape = 'prompt' in test ? ['-p', String(test.prompt), '-n', '0'] : ['-p', '0', '-n', String(test.gen), '-d', String(test.depth)];
  const out = execFileSync(join(LLAMACPP_BIN, 'llama-bench'), ['-m', gguf, ...shape, '-t', String(threads), '-r', '1', '-o', 'json'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 1 << 24,
  });
  const rows = JSON.parse(out) as Array<{ avg_ts: number }>;
  if (rows.length !== 1) throw new Error(`llama-bench ${gguf}: expected one result, got ${rows.length}`);
  return rows[0]!.avg_ts;
}

/**
 * llama-batched-bench on one GGUF file: `batch` sequences, each a promptLen-token prompt then genLen decoded tokens,
 * in one unified cache. Returns the aggregate prefill and decode tokens/s (its S_PP and S_TG columns). Its
 * markdown table is parsed: the JSONL output of the build in ../shared prints nothing.
 */
export function llamaBatchedBench(gguf: string, threads: number, promptLen: number, genLen: number, batch: number) {
  const ctx = Math.ceil((batch * (promptLen + genLen)) / 256) * 256;
  // A cheap batch-1 run follows the one measured: this build's logger loses the last table row now and then at exit.
  const args = ['-m', gguf, '-c', String(ctx), '-kvu', '-npp', String(promptLen), '-ntg', String(genLen), '-npl', `${batch},1`];
  const out = execFileSync(join(LLAMACPP_BIN, 'llama-batched-bench'), [...args, '-t', String(threads), '-tb', String(threads)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 1 << 24,
  });
  // | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
  const row = out
    .split('\n')
    .map((l) =>
      l
        .split('|')
        .map((c) => c.trim())
        .filter(Boolean),
    )
    .find((cells) => cells.length === 10 && cells[0] === String(promptLen) && cells[2] === String(batch));
  if (!row) throw new Error(`llama-batched-bench ${gguf}: no result row for batch ${batch} in its output:\n${out}`);
  return { prefill: Number(row[5]), decode: Number(row[7]) };
}
