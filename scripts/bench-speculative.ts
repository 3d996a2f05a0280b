// Speculative-decoding benchmark (`npm run bench:speculative`): a target grown from aidreams-260k (synth --grow-from:
// hidden 768, 12 layers, 12/4 heads, noise 0.01, so it is trained yet costs what that shape costs), drafted by a
// 2-layer distilled student of aidreams-260k, by the target's own int4, and by prompt lookup on prompts that hold
// the text to be continued. Greedy output is asserted identical to plain decoding; plain and speculative runs
// alternate within each repetition and speedups are per-repetition ratios (median and range). Needs ../shared and
// the built CLI (npm run build): the models are made with the commands a user would type, printed as they run.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { measureSpeculative, type SpeculativeRun } from '../src/bench/speculation.js';
import { loadTokenizer } from '../src/formats/tokenizer.js';
import { generate } from '../src/runtime/generate.js';
import { openModel, type CausalLM } from '../src/runtime/model.js';
import { PROMPT_LOOKUP } from '../src/runtime/prompt-lookup.js';
import { GREEDY } from '../src/runtime/sampling.js';
import type { Draft } from '../src/runtime/speculative.js';
import { args, describeMachine, flag, formatStats, formatTable, log, machine, stats, textFlag } from './bench/common.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SHARED = join(ROOT, '..', 'shared');
const AIDREAMS = join(SHARED, 'models', 'aidreams-260k');
const TRAIN = join(SHARED, 'data', 'dreams-train.txt');
const EVAL = join(SHARED, 'data', 'dreams-eval.txt');
const CLI = join(ROOT, 'bin', 'llmopt.js');

/** Runs the built CLI as a user would, printing the command (paths relative to the work folder) to stderr. */
function llmopt(work: string, ...argv: string[]): void {
  log(`$ llmopt ${argv.map((a) => a.replace(`${work}/`, '')).join(' ')}`);
  const r = spawnSync(process.execPath, [CLI, ...argv], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`llmopt ${argv[0]} failed: ${r.stderr}`);
}

interface Case {
  name: string;
  draft: Draft;
  draftTokens: number;
  /** Prompts (token ids) by repetition. */
  prompts: number[][];
}

async function main(): Promise<void> {
  if (!existsSync(AIDREAMS)) {
    log(`../shared is absent (${AIDREAMS}): nothing to grow the target from`);
    return;
  }
  if (!existsSync(join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('run `npm run build` first: the models are made by the CLI');
  const reps = flag('reps', 5);
  const genLen = flag('gen-len', 64);
  const promptLen = flag('prompt-len', 24);
  const distillSteps = flag('distill-steps', 300);
  const kStudent = flag('k-student', 4);
  const kInt4 = flag('k-int4', 5);
  const kLookup = flag('k-lookup', 6);
  const threads = flag('threads', 2);
  const keep = args.includes('--keep');
  const work = textFlag('work') ?? mkdtempSync(join(tmpdir(), 'llmopt-bench-spec-'));
  const at = (name: string) => join(work, name);
  try {
    const grow = ['--hidden', '768', '--layers', '12', '--heads', '12', '--kv-heads', '4', '--noise', '0.01'];
    if (!existsSync(at('target'))) llmopt(work, 'synth', '--grow-from', AIDREAMS, ...grow, '-o', at('target-hf'));
    if (!existsSync(at('target'))) llmopt(work, 'export', at('target-hf'), '-o', at('target'));
    // MatMulNBits with int8 compute: a quarter of the f32 step here, where the default accuracy level costs two thirds of it.
    const int4Flags = ['--to', 'int4', '--accuracy-level', '4'];
    if (!existsSync(at('target-int4'))) llmopt(work, 'quantize', at('target-hf'), ...int4Flags, '-o', at('target-int4'));
    const studentGiven = textFlag('student');
    if (!studentGiven && !existsSync(at('student-hf')))
      llmopt(
        work,
        'distill',
        '--teacher',
        AIDREAMS,
        '--student-layers',
        '2',
        '--data',
        TRAIN,
        '--steps',
        String(distillSteps),
        '-o',
        at('student-hf'),
      );
    if (!studentGiven && !existsSync(at('student-hf'))) throw new Error('distill wrote nothing');
    if (!existsSync(at('student'))) llmopt(work, 'export', studentGiven ?? at('student-hf'), '-o', at('student'));

    const open = (dir: string) => openModel(dir, { device: 'cpu', threads });
    const target = await open(at('target'));
    const student = await open(at('student'));
    const int4 = await open(at('target-int4'));
    const tokenizer = loadTokenizer(at('target'));
    const lines = readFileSync(EVAL, 'utf8')
      .split('\n')
      .filter((l) => l.length > 200);
    const starts = Array.from({ length: reps }, (_, r) => tokenizer.encode(lines[r]!).slice(0, promptLen));
    const lookupPrompts = await promptsHoldingTheirContinuation(
      target,
      starts.map((s) => s.slice(0, 12)),
      genLen,
    );
    const cases: Case[] = [
      { name: '2-layer distilled student', draft: student, draftTokens: kStudent, prompts: starts },
      { name: "target's own int4", draft: int4, draftTokens: kInt4, prompts: starts },
      { name: 'prompt lookup (prompt holds the continuation)', draft: PROMPT_LOOKUP, draftTokens: kLookup, prompts: lookupPrompts },
    ];
    for (const c of cases) await measureSpeculative(target, c.draft, c.prompts[0]!, 8, c.draftTokens, GREEDY); // warm-up
    const runs: SpeculativeRun[][] = cases.map(() => []);
    for (let r = 0; r < reps; r++) {
      log(`repetition ${r + 1}/${reps}`);
      for (const [i, c] of cases.entries()) {
        const run = await measureSpeculative(target, c.draft, c.prompts[r]!, genLen, c.draftTokens, GREEDY);
        if (!run.identical) throw new Error(`${c.name}: speculative output differs from plain greedy decoding (repetition ${r + 1})`);
        runs[i]!.push(run);
      }
    }
    report(cases, runs, { reps, genLen, promptLen, distillSteps, threads });
    await Promise.all([target.release(), student.release(), int4.release()]);
  } finally {
    if (!keep && !textFlag('work')) rmSync(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  }
}

/**
 * Prompts that hold the text to be continued: a start, the target's own greedy continuation of it, and the start
 * again (less its first token), so the continuation sought is in the prompt when the target repeats itself.
 */
async function promptsHoldingTheirContinuation(target: CausalLM, starts: number[][], genLen: number): Promise<number[][]> {
  const out: number[][] = [];
  for (const s of starts) {
    const room = target.spec.maxPositions - genLen - 2 * s.length;
    const c = (await generate(target, [s], { maxNewTokens: Math.max(1, room), sampling: GREEDY, stopTokens: [] })).tokens[0]!;
    out.push([...s, ...c, ...s.slice(1)]);
  }
  return out;
}

function report(cases: Case[], runs: SpeculativeRun[][], settings: Record<string, number>): void {
  const rows = [
    ['draft', 'K', 'acceptance', 'tokens / target pass', 'plain tok/s', 'speculative tok/s', 'speedup', 'ms: step / pass / draft'],
  ];
  const json = cases.map((c, i) => {
    const rs = runs[i]!;
    const s = (f: (r: SpeculativeRun) => number) => stats(rs.map(f));
    const fig = {
      draft: c.name,
      draftTokens: c.draftTokens,
      acceptanceRate: s((r) => r.acceptanceRate),
      tokensPerTargetPass: s((r) => r.tokensPerTargetPass),
      targetOnlyTokensPerSecond: s((r) => r.targetOnlyTokensPerSecond),
      speculativeTokensPerSecond: s((r) => r.speculativeTokensPerSecond),
      speedup: s((r) => r.speedup),
      targetStepMs: s((r) => r.targetStepMs),
      targetPassMs: s((r) => r.targetPassMs),
      draftPassMs: s((r) => r.draftPassMs),
      identical: rs.every((r) => r.identical),
    };
    rows.push([
      c.name,
      String(c.draftTokens),
      formatStats(fig.acceptanceRate, 2),
      formatStats(fig.tokensPerTargetPass, 2),
      formatStats(fig.targetOnlyTokensPerSecond),
      formatStats(fig.speculativeTokensPerSecond),
      `${formatStats(fig.speedup, 2)}x`,
      `${fig.targetStepMs.median.toFixed(1)} / ${fig.targetPassMs.median.toFixed(1)} / ${fig.draftPassMs.median.toFixed(2)}`,
    ]);
    return fig;
  });
  const m = machine();
  process.stdout.write(
    `Speculative decoding, batch 1, greedy (output identical to plain decoding in every run), target grown from aidreams-260k\n` +
      `(hidden 768, 12 layers, 12/4 heads, ffn 2048, noise 0.01, f32, fused attention; int4: --accuracy-level 4); ` +
      `${settings.genLen} new tokens, ` +
      `${settings.reps} interleaved repetitions, median (range), ${settings.threads} threads\n` +
      `${formatTable(rows)}\n${describeMachine(m)}\n`,
  );
  if (args.includes('--json')) process.stdout.write(`${JSON.stringify({ machine: m, settings, results: json }, null, 2)}\n`);
}

await main();
