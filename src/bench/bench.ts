// `llmopt bench` as a library call: opens every artifact, then measures static batching per batch
// size, static against continuous batching on a request trace, and speculative decoding, each
// alternating between artifacts (and batch sizes) repetition by repetition, and reports median and
// range with ratios to the first artifact and to the smallest batch, formed within each repetition.
import { InputError } from '../core/errors.js';
import { loadTokenizer } from '../formats/tokenizer.js';
import type { Device } from '../runtime/device.js';
import { openModel, type CausalLM } from '../runtime/model.js';
import type { SamplingOptions } from '../runtime/sampling.js';
import type { Policy } from '../runtime/scheduler.js';
import { checkDraft, openDraft, releaseDraft, type Draft } from '../runtime/speculative.js';
import { PROMPT_LOOKUP } from '../runtime/prompt-lookup.js';
import { measureBatch, type BatchRun } from './batching.js';
import { machineInfo, type Machine } from './machine.js';
import { measureServing, type ServingRun } from './serving.js';
import { measureSpeculative, type SpeculativeRun } from './speculation.js';
import { percentileStats, stats, type Stats } from './stats.js';
import { requestTrace, syntheticPrompt, type TraceOptions } from './trace.js';

export interface BenchOptions {
  artifacts: string[];
  /** Batch sizes of the static-batching sweep (empty: no sweep). */
  batches: number[];
  promptLen: number;
  genLen: number;
  /** Text to use as every prompt instead of promptLen synthetic tokens. */
  prompt?: string;
  reps: number;
  /** A request trace to serve with static and with continuous batching on `slots` rows. */
  trace?: Omit<TraceOptions, 'vocab'> & { slots: number };
  draft?: string;
  draftTokens: number;
  sampling: SamplingOptions;
  device: Device;
  /** Sharded artifacts: a device per rank. */
  rankDevices?: Device[];
  threads?: number;
  onProgress?: (what: string) => void;
}

export interface BatchFigures {
  artifact: string;
  batch: number;
  prefillTokensPerSecond: Stats;
  decodeTokensPerSecond: Stats;
  perSequenceTokensPerSecond: Stats;
  timeToFirstTokenMs: Stats;
  interTokenLatencyMs: ReturnType<typeof percentileStats>;
  peakRssMiB: number;
  /** Decode tokens/s over the first artifact's at the same batch size, per repetition. */
  decodeRatioToFirst: Stats;
  /** Decode tokens/s (all rows) over the same artifact's at the sweep's smallest batch, per repetition. */
  decodeScaling: Stats;
  /** The batch size decodeScaling divides by. */
  scalingBase: number;
}

export interface ServingFigures {
  artifact: string;
  policy: Policy;
  throughput: Stats;
  decodeTokensPerSecond: Stats;
  timeToFirstTokenMs: ReturnType<typeof percentileStats>;
  interTokenLatencyMs: ReturnType<typeof percentileStats>;
  endToEndMs: ReturnType<typeof percentileStats>;
  /** Throughput over static batching's on the same trace, per repetition. */
  throughputOverStatic: Stats;
  throughputRatioToFirst: Stats;
}

export interface SpeculativeFigures {
  artifact: string;
  draft: string;
  draftTokens: number;
  acceptanceRate: Stats;
  tokensPerTargetPass: Stats;
  speculativeTokensPerSecond: Stats;
  targetOnlyTokensPerSecond: Stats;
  speedup: Stats;
  targetPassMs: Stats;
  draftPassMs: Stats;
  targetStepMs: Stats;
  identical: boolean | null;
}

export interface BenchReport {
  machine: Machine;
  artifacts: Array<{ path: string; description: string; vocab: number; context: number; layers: number; hidden: number }>;
  settings: Omit<BenchOptions, 'onProgress' | 'artifacts'>;
  batching: BatchFigures[];
  serving: ServingFigures[];
  speculative: SpeculativeFigures[];
}

/** Runs `measure` for each repetition and artifact, alternating, after one warm-up each. */
async function alternate<T>(
  models: CausalLM[],
  reps: number,
  warmUp: (m: CausalLM, a: number) => Promise<unknown>,
  measure: (m: CausalLM, a: number) => Promise<T>,
): Promise<T[][]> {
  for (let a = 0; a < models.length; a++) await warmUp(models[a]!, a);
  const runs: T[][] = models.map(() => []);
  for (let r = 0; r < reps; r++) for (let a = 0; a < models.length; a++) runs[a]!.push(await measure(models[a]!, a));
  return runs;
}

const ratios = (xs: number[], base: number[]) => stats(xs.map((x, i) => x / base[i]!));

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  if (!Number.isInteger(o.reps) || o.reps < 1) throw new InputError(`--reps ${o.reps}: expected a positive integer`);
  for (const b of o.batches) if (!Number.isInteger(b) || b < 1) throw new InputError(`batch size ${b}: expected a positive integer`);
  const models: CausalLM[] = [];
  let draft: Draft | null = null;
  const release = async () => Promise.all([...models.map((m) => m.release()), releaseDraft(draft)]);
  try {
    for (const dir of o.artifacts) models.push(await openModel(dir, { device: o.device, threads: o.threads, rankDevices: o.rankDevices }));
    if (o.draft) draft = await openDraft(o.draft, { device: o.device, threads: o.threads });
    const prompts = models.map((m, a) =>
      o.prompt ? loadTokenizer(o.artifacts[a]!).encode(o.prompt) : syntheticPrompt(o.promptLen, m.spec.vocabSize),
    );
    models.forEach((m, a) => {
      const context = Math.min(m.spec.maxPositions, draft && draft !== PROMPT_LOOKUP ? draft.spec.maxPositions : Infinity);
      const longest = Math.max(prompts[a]!.length, o.trace?.promptLen[1] ?? 0) + Math.max(o.genLen, o.trace?.genLen[1] ?? 0);
      if (longest > context)
        throw new InputError(
          `${o.artifacts[a]}: a prompt of ${Math.max(prompts[a]!.length, o.trace?.promptLen[1] ?? 0)} tokens plus ` +
            `${Math.max(o.genLen, o.trace?.genLen[1] ?? 0)} new tokens exceeds the context of ${context}`,
        );
      if (draft) checkDraft(m, draft);
    });
    const warmUp = (m: CausalLM, a: number) => measureBatch(m, 1, 0, Math.min(4, o.genLen), prompts[a]!.slice(0, 8));
    const { onProgress: _, artifacts: __, ...settings } = o;
    const report: BenchReport = {
      machine: machineInfo(models[0]!.device),
      artifacts: models.map((m, a) => ({
        path: o.artifacts[a]!,
        description: m.description,
        vocab: m.spec.vocabSize,
        context: m.spec.maxPositions,
        layers: m.spec.numLayers,
        hidden: m.spec.hiddenSize,
      })),
      settings,
      batching: [],
      serving: [],
      speculative: [],
    };

    if (o.batches.length > 0) {
      // Every repetition sweeps all batch sizes (ascending) for every artifact, so that a ratio between
      // two batch sizes compares runs minutes apart at most, not a whole sweep apart on a noisy machine.
      const batches = [...new Set(o.batches)];
      const order = [...batches].sort((x, y) => x - y);
      for (let a = 0; a < models.length; a++) await warmUp(models[a]!, a);
      const runs = new Map<number, BatchRun[][]>(order.map((b) => [b, models.map(() => [])]));
      for (let r = 0; r < o.reps; r++) {
        for (const batch of order) {
          o.onProgress?.(`static batching, repetition ${r + 1} of ${o.reps}, batch ${batch}`);
          for (let a = 0; a < models.length; a++)
            runs.get(batch)![a]!.push(await measureBatch(models[a]!, batch, o.promptLen, o.genLen, o.prompt ? prompts[a] : undefined));
        }
      }
      const decode = (rs: BatchRun[]) => rs.map((r) => r.decodeTokensPerSecond);
      for (const batch of batches) {
        runs.get(batch)!.forEach((rs, a) =>
          report.batching.push({
            artifact: o.artifacts[a]!,
            batch,
            prefillTokensPerSecond: stats(rs.map((r) => r.prefillTokensPerSecond)),
            decodeTokensPerSecond: stats(decode(rs)),
            perSequenceTokensPerSecond: stats(rs.map((r) => r.perSequenceTokensPerSecond)),
            timeToFirstTokenMs: stats(rs.map((r) => r.run.timeToFirstToken.p50)),
            interTokenLatencyMs: percentileStats(rs.map((r) => r.run.interTokenLatency)),
            // The process's peak so far: from the first repetition, which met no larger batch before this one.
            peakRssMiB: rs[0]!.run.peakRssMiB,
            decodeRatioToFirst: ratios(decode(rs), decode(runs.get(batch)![0]!)),
            decodeScaling: ratios(decode(rs), decode(runs.get(order[0]!)![a]!)),
            scalingBase: order[0]!,
          }),
        );
      }
    }

    if (o.trace) {
      const trace = o.trace;
      o.onProgress?.(
        `request trace: ${trace.requests} requests at ${trace.arrivalRate}/s, static and continuous batching on ${trace.slots} rows`,
      );
      const runs = await alternate(models, o.reps, warmUp, async (m) => {
        const requests = requestTrace({ ...trace, vocab: m.spec.vocabSize });
        const pair: Record<Policy, ServingRun> = {
          static: await measureServing(m, requests, 'static', trace.slots),
          continuous: await measureServing(m, requests, 'continuous', trace.slots),
        };
        return pair;
      });
      for (const policy of ['static', 'continuous'] as const) {
        runs.forEach((rs, a) => {
          const own = rs.map((r) => r[policy]);
          report.serving.push({
            artifact: o.artifacts[a]!,
            // What actually ran: the standard form falls back to static batching.
            policy: own[0]!.policy,
            throughput: stats(own.map((r) => r.throughput)),
            decodeTokensPerSecond: stats(own.map((r) => r.decodeTokensPerSecond)),
            timeToFirstTokenMs: percentileStats(own.map((r) => r.timeToFirstToken)),
            interTokenLatencyMs: percentileStats(own.map((r) => r.interTokenLatency)),
            endToEndMs: percentileStats(own.map((r) => r.endToEnd)),
            throughputOverStatic: ratios(
              own.map((r) => r.throughput),
              rs.map((r) => r.static.throughput),
            ),
            throughputRatioToFirst: ratios(
              own.map((r) => r.throughput),
              runs[0]!.map((r) => r[policy].throughput),
            ),
          });
        });
      }
    }

    if (draft) {
      const d = draft; // narrowed for the closures below
      o.onProgress?.(`speculative decoding, K = ${o.draftTokens}`);
      const runs = await alternate(
        models,
        o.reps,
        (m, a) => measureSpeculative(m, d, prompts[a]!, Math.min(8, o.genLen), o.draftTokens, o.sampling),
        (m, a) => measureSpeculative(m, d, prompts[a]!, o.genLen, o.draftTokens, o.sampling),
      );
      runs.forEach((rs, a) => {
        const s = (f: (r: SpeculativeRun) => number) => stats(rs.map(f));
        report.speculative.push({
          artifact: o.artifacts[a]!,
          draft: o.draft!,
          draftTokens: o.draftTokens,
          acceptanceRate: s((r) => r.acceptanceRate),
          tokensPerTargetPass: s((r) => r.tokensPerTargetPass),
          speculativeTokensPerSecond: s((r) => r.speculativeTokensPerSecond),
          targetOnlyTokensPerSecond: s((r) => r.targetOnlyTokensPerSecond),
          speedup: s((r) => r.speedup),
          targetPassMs: s((r) => r.targetPassMs),
          draftPassMs: s((r) => r.draftPassMs),
          targetStepMs: s((r) => r.targetStepMs),
          identical: rs[0]!.identical === null ? null : rs.every((r) => r.identical),
        });
      });
    }
    return report;
  } finally {
    await release();
  }
}
