// Side by side with llama.cpp (`npm run bench:peers`): one synthetic checkpoint, exported and quantized by the llmopt
// CLI with its defaults (no flags) and written as GGUF by llmopt's own writer (F32, Q8_0, Q4_0, Q4_K_M); then llmopt's
// runtime against llama-bench (batch-1 prefill and decode) and llama-batched-bench (batch-N aggregate decode) on the
// same weights and thread count, repetitions interleaved, ratios median and range. Needs `npm run build` (the CLI)
// and ../shared/tools/llama.cpp (skips with a message where absent). --arch qwen3-0.6b runs Qwen3-0.6B's shape.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSyntheticLlama, type SyntheticSpec } from '../src/model/synthetic.js';
import { synthSpec } from '../src/model/synthetic-shapes.js';
import { exportGguf } from '../src/passes/export/gguf.js';
import { quantizeGguf, type GgufTarget } from '../src/passes/quantize/gguf.js';
import { DecoderModel } from '../src/runtime/decoder.js';
import {
  LLAMACPP_BIN,
  SMOKE,
  SYNTHETIC,
  args,
  artifactBytes,
  describeMachine,
  flag,
  formatStats,
  formatTable,
  llamaBatchedBench,
  llamaBench,
  log,
  machine,
  maxRssMiB,
  stats,
  textFlag,
  timeRun,
  type Stats,
} from './bench/common.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin', 'llmopt.js');
const MiB = 2 ** 20;

/** One llmopt artifact: the command that writes it (the defaults, but for one labelled row) and the GGUF types it faces. */
interface Pair {
  key: string;
  precision: 'f32' | 'int8' | 'int4';
  command: string[];
  gguf: Array<'f32' | GgufTarget>;
}
const PAIRS: Pair[] = [
  { key: 'f32', precision: 'f32', command: ['export'], gguf: ['f32'] },
  { key: 'int8', precision: 'int8', command: ['quantize', '--to', 'int8'], gguf: ['q8_0'] },
  // Not a default: level 4 without the activation residual costs int8 +199% KL (see matMulNBitsDefaults); measured to
  // show what the residual costs in speed.
  {
    key: 'int8-acc4',
    precision: 'int8',
    command: ['quantize', '--to', 'int8', '--activation-residual', 'off', '--symmetric'],
    gguf: ['q8_0'],
  },
  { key: 'int4', precision: 'int4', command: ['quantize', '--to', 'int4'], gguf: ['q4_0', 'q4_k_m'] },
];

/** The checkpoint: the shape (SYNTHETIC) or a named one; Qwen3-0.6B runs at 4 and 8 bits only. */
function checkpointSpec(arch: string | null): { spec: SyntheticSpec; precisions: string[] } {
  // A tiny shape that checks the script end to end in seconds; its figures mean nothing.
  if (args.includes('--smoke')) return { spec: SMOKE, precisions: ['f32', 'int8', 'int4'] };
  if (arch === null) return { spec: SYNTHETIC, precisions: ['f32', 'int8', 'int4'] };
  const knobs = { hidden: 0, layers: 0, heads: 1, kvHeads: 1, vocab: 0, context: 2048, dtype: 'float32' as const, tied: false };
  const { spec } = synthSpec(arch as 'qwen3-0.6b', knobs);
  return { spec, precisions: ['int8', 'int4'] };
}

/** Per-repetition figures of one side of one comparison. */
interface Runs {
  prefill: number[];
  decode: number[];
  batchDecode: number[];
}
const emptyRuns = (): Runs => ({ prefill: [], decode: [], batchDecode: [] });
const ratios = (a: number[], b: number[]): Stats | null => (a.length && b.length ? stats(a.map((x, i) => x / b[i]!)) : null);

async function main(): Promise<void> {
  if (!existsSync(join(LLAMACPP_BIN, 'llama-bench'))) {
    console.log(`${LLAMACPP_BIN}: llama.cpp is absent; bench:peers compares against its llama-bench, skipped`);
    return;
  }
  if (!existsSync(join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is not built: run `npm run build` first');
  const reps = flag('reps', 5);
  const promptLen = flag('prompt-len', 128);
  const genLen = flag('gen-len', 64);
  const batch = flag('batch', 32);
  const threads = flag('threads', availableParallelism());
  const { spec, precisions } = checkpointSpec(textFlag('arch'));
  const chosen = textFlag('precisions')?.split(',') ?? precisions;
  const pairs = PAIRS.filter((p) => chosen.includes(p.precision) && (p.key === p.precision || !args.includes('--defaults-only')));
  // --work <dir>: a folder of an earlier run (--keep) whose checkpoint and files are reused; it is kept.
  const given = textFlag('work');
  if (args.includes('--prepare') && !given) throw new Error('--prepare writes into --work <dir>: name one');
  const work = given ?? mkdtempSync(join(tmpdir(), 'llmopt-bench-peers-'));
  try {
    const source = join(work, spec.name);
    if (!existsSync(source)) {
      log(`writing synthetic checkpoint (${spec.name}) ...`);
      await writeSyntheticLlama(work, spec);
    }
    const artifacts: Record<string, { path: string; bytes: number }> = {};
    const ggufs: Record<string, { path: string; bytes: number }> = {};
    for (const pair of pairs) {
      const out = join(work, `llmopt-${pair.key}`);
      log(`llmopt ${pair.command.join(' ')} ...`);
      if (!existsSync(join(out, 'model.onnx')))
        execFileSync(process.execPath, [CLI, ...pair.command, source, '-o', out, '--quiet'], { stdio: ['ignore', 'ignore', 'inherit'] });
      artifacts[pair.key] = { path: out, bytes: artifactBytes(out) };
      for (const t of pair.gguf) {
        if (ggufs[t]) continue;
        const path = join(work, `${t}.gguf`);
        log(`GGUF ${t.toUpperCase()} (llmopt's writer) ...`);
        if (existsSync(path)) log('  (reused)');
        else if (t === 'f32') await exportGguf(source, path, { dtype: 'f32' });
        else await quantizeGguf(source, path, { to: t, method: 'rtn', exclude: [], quantizeEmbeddings: false, fallback: true });
        ggufs[t] = { path, bytes: statSync(path).size };
      }
    }

    // --prepare: only write the files into --work (slow at 600M parameters, and needs no quiet machine), measure later.
    if (args.includes('--prepare')) return;
    const models = new Map<string, DecoderModel>();
    for (const pair of pairs) models.set(pair.key, await DecoderModel.open(artifacts[pair.key]!.path, { device: 'cpu', threads }));
    for (const m of models.values()) await timeRun(m, promptLen, 4); // warm-up, not counted
    const ours = new Map(pairs.map((p) => [p.key, emptyRuns()]));
    const theirs = new Map(pairs.flatMap((p) => p.gguf.map((t) => [t, emptyRuns()] as const)));
    /** The rows and the report after `done` repetitions. */
    const summarize = (done: number) => {
      const rows = pairs.flatMap((pair) =>
        pair.gguf.map((t) => {
          const a = ours.get(pair.key)!;
          const b = theirs.get(t)!;
          return {
            precision: pair.precision,
            defaults: pair.key === pair.precision,
            llmopt: `llmopt ${pair.command.join(' ')}`,
            gguf: t.toUpperCase(),
            llmoptBytes: artifacts[pair.key]!.bytes,
            ggufBytes: ggufs[t]!.bytes,
            // Each repetition's tokens/s, in order, so that a disturbed repetition can be told from the others.
            runs: { llmopt: a, llamacpp: b },
            decode: { llmopt: stats(a.decode), llamacpp: stats(b.decode), ratio: ratios(a.decode, b.decode)! },
            prefill: { llmopt: stats(a.prefill), llamacpp: stats(b.prefill), ratio: ratios(a.prefill, b.prefill)! },
            batchDecode:
              batch > 1
                ? { llmopt: stats(a.batchDecode), llamacpp: stats(b.batchDecode), ratio: ratios(a.batchDecode, b.batchDecode)! }
                : null,
          };
        }),
      );
      const report = {
        machine: machine(),
        model: { name: spec.name, ...spec.config, architecture: spec.architecture ?? 'llama' },
        settings: { reps: done, promptLen, genLen, batch, threads, llamaCpp: LLAMACPP_BIN },
        rows,
        // This process's peak: the llmopt artifacts open at once and the batch-N caches (llama.cpp runs in children).
        peakRssMiB: Math.round(maxRssMiB()),
      };
      return report;
    };
    // --json is rewritten after every repetition (temp file, then rename): a run cut short keeps the repetitions it finished.
    const writeJson = (report: ReturnType<typeof summarize>) => {
      const out = textFlag('json');
      if (!out) return;
      writeFileSync(`${out}.tmp`, `${JSON.stringify(report, null, 2)}\n`);
      renameSync(`${out}.tmp`, out);
    };
    for (let rep = 0; rep < reps; rep++) {
      const measured = new Set<string>();
      for (const pair of pairs) {
        log(`rep ${rep + 1}/${reps} ${pair.key} ...`);
        const model = models.get(pair.key)!;
        const mine = ours.get(pair.key)!;
        const one = await timeRun(model, promptLen, genLen);
        mine.prefill.push(one.prefill);
        mine.decode.push(one.decode);
        if (batch > 1) mine.batchDecode.push((await timeRun(model, promptLen, genLen, batch)).decode);
        for (const t of pair.gguf) {
          // Each GGUF file once per repetition, however many llmopt artifacts face it.
          if (measured.has(t)) continue;
          measured.add(t);
          const peer = theirs.get(t)!;
          const gguf = ggufs[t]!.path;
          peer.prefill.push(llamaBench(gguf, threads, { prompt: promptLen }));
          // Decode after the prompt, as llmopt's run decodes: the cache holds promptLen tokens when it starts.
          peer.decode.push(llamaBench(gguf, threads, { gen: genLen, depth: promptLen }));
          if (batch > 1) peer.batchDecode.push(llamaBatchedBench(gguf, threads, promptLen, genLen, batch).decode);
        }
      }
      writeJson(summarize(rep + 1));
    }
    for (const m of models.values()) await m.release();

    const report = summarize(reps);
    writeJson(report);
    // Whole tokens/s, but for slow rows (the int8 default at 600M parameters decodes below 1 token/s).
    const f = (s: Stats) => formatStats(s, s.median < 10 ? 2 : s.median < 100 ? 1 : 0);
    const r = (s: Stats) => formatStats(s, 2);
    console.log(describeMachine(report.machine));
    const c = spec.config;
    console.log(
      `model: ${spec.name} (random weights), hidden ${c.hidden_size}, ${c.num_hidden_layers} layers, heads ${c.num_attention_heads}/` +
        `${c.num_key_value_heads} kv, ffn ${c.intermediate_size}, vocab ${c.vocab_size}${c.tie_word_embeddings ? ', tied' : ''}`,
    );
    console.log(
      `${reps} repetitions interleaved, ${threads} threads on both sides; prompt ${promptLen}, generate ${genLen}; ` +
        `tokens/s median (min-max); ratio = llmopt / llama.cpp within each repetition; llmopt peak RSS ${report.peakRssMiB} MiB`,
    );
    const head = ['llmopt (defaults)', 'MiB', 'llama.cpp', 'MiB', 'decode b1', 'llama.cpp', 'ratio', 'prefill', 'llama.cpp', 'ratio'];
    if (batch > 1) head.push(`decode b${batch}`, 'llama.cpp', 'ratio');
    console.log(
      formatTable([
        head,
        ...report.rows.map((x) => [
          x.llmopt,
          (x.llmoptBytes / MiB).toFixed(0),
          x.gguf,
          (x.ggufBytes / MiB).toFixed(0),
          f(x.decode.llmopt),
          f(x.decode.llamacpp),
          r(x.decode.ratio),
          f(x.prefill.llmopt),
          f(x.prefill.llamacpp),
          r(x.prefill.ratio),
          ...(x.batchDecode ? [f(x.batchDecode.llmopt), f(x.batchDecode.llamacpp), r(x.batchDecode.ratio)] : []),
        ]),
      ]),
    );
  } finally {
    if (!args.includes('--keep') && !given) rmSync(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  }
}

await main();
