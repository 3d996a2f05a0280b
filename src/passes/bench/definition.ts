// bench's declaration: throughput and latency of artifacts (static batching per batch size, a request
// trace under static and continuous batching, speculative decoding with a draft).
import { runBench, type BenchReport } from '../../bench/bench.js';
import { deviceOptions, int, intList, number, range, stageRef, string, boolean } from '../options.js';
import { definePass, type ModelKindName } from '../pass.js';

const RUNNABLE: ModelKindName[] = ['artifact', 'sharded'];

export const BENCH_OPTIONS = {
  ...deviceOptions({ rankDevices: true }),
  // A recipe's bench is one batch size unless it asks for more; the command line sweeps 1 and 8.
  batch: intList({
    arg: '<sizes>',
    min: 1,
    what: 'batch size',
    recipeDefault: [1],
    help: 'comma-separated batch sizes for static batching (default 1,8 when nothing else is asked)',
  }),
  promptLen: int({ min: 1, default: 128, help: 'prompt tokens (synthetic ids)' }),
  genLen: int({ min: 1, default: 128, help: 'tokens to generate per sequence' }),
  prompt: string({ arg: '<text>', help: 'use this text (tokenized) as the prompt instead of synthetic ids' }),
  reps: int({ min: 1, default: 3, help: 'measured repetitions after a warm-up' }),
  requests: int({ min: 1, help: 'serve a request trace of n requests with static and with continuous batching' }),
  arrivalRate: number({ arg: '<r>', min: 0, default: 8, help: 'mean requests per second of the trace (Poisson)' }),
  traceInput: range({ help: 'prompt lengths of the trace, e.g. 16-128 (default 16 to --prompt-len)' }),
  traceOutput: range({ help: 'output lengths of the trace, e.g. 8-128 (default 8 to --gen-len)' }),
  slots: int({ min: 1, help: 'rows decoded together when serving the trace (default: the largest --batch, else 8)' }),
  seed: int({ min: 0, default: 0, help: 'trace and sampling seed' }),
  draft: stageRef({
    arg: '<artifact>',
    help: 'speculative decoding with this draft artifact (same vocabulary), or prompt-lookup (n-gram matches, no model)',
  }),
  draftTokens: int({ arg: '<k>', min: 1, default: 4, help: 'tokens the draft proposes per target pass' }),
  temperature: number({ arg: '<t>', min: 0, default: 0, help: 'speculative decoding: 0 for greedy' }),
  topK: int({ arg: '<k>', min: 0, default: 0, help: 'speculative decoding: sample from the k most likely tokens (0: all)' }),
  topP: number({ arg: '<p>', min: 0, max: 1, default: 1, help: 'speculative decoding: nucleus sampling threshold' }),
  // A recipe writes its figures into the stage folder and its own report.
  json: string({ arg: '<file>', only: 'cli', help: 'write every figure and the machine as JSON' }),
  chart: string({ arg: '<file>', only: 'cli', help: 'write an SVG chart' }),
  quiet: boolean({ short: '-q', only: 'cli', help: 'no progress' }),
};

/**
 * The headline speed of a bench: with the draft when there is one, else decode at the first batch size,
 * else the trace's continuous batching.
 */
function benchSpeed(r: BenchReport): number | null {
  return (
    r.speculative[0]?.speculativeTokensPerSecond.median ??
    r.batching[0]?.decodeTokensPerSecond.median ??
    r.serving.find((s) => s.policy === 'continuous')?.throughput.median ??
    null
  );
}

export const benchPass = definePass({
  name: 'bench',
  options: BENCH_OPTIONS,
  reads: { input: RUNNABLE, draft: RUNNABLE },
  readHint: 'bench runs an ONNX artifact: add an export or quantize stage before it',
  writes: () => null,
  figures: () => ['min_tokens_per_s'],
  run: (o, ctx) => {
    const batches = o.batch ?? (o.requests || o.draft ? [] : [1, 8]);
    const trace = o.requests
      ? {
          requests: o.requests,
          arrivalRate: o.arrivalRate || Infinity,
          promptLen: o.traceInput ?? [Math.min(16, o.promptLen), o.promptLen],
          genLen: o.traceOutput ?? [Math.min(8, o.genLen), o.genLen],
          slots: o.slots ?? Math.max(8, ...batches),
          seed: o.seed,
        }
      : undefined;
    const sampling = { temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed };
    return runBench({
      ...o,
      artifacts: ctx.inputs ?? [ctx.reads.input!],
      batches,
      trace,
      draft: ctx.reads.draft,
      sampling,
      device: ctx.device,
      onProgress: ctx.onLog,
    });
  },
  measured: (r) => ({ tokensPerSecond: benchSpeed(r) }),
});
