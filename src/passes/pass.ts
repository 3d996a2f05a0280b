// The shape of a pass definition: its options, what it reads and writes, the figures it measures, its
// up-front checks and its run. src/passes/registry.ts lists the definitions.
import type { Device } from '../runtime/device.js';
import type { EvalReport } from '../eval/evaluate.js';
import { compareModels } from '../eval/compare.js';
import type { OptionSpecs, OptionValues } from './options.js';

/** What a folder holds, as far as the next pass cares. */
export type ModelKind =
  | { kind: 'hf' }
  | { kind: 'hf-quantized' }
  | { kind: 'artifact'; precision: string }
  | { kind: 'sharded' }
  | { kind: 'tensorrt-llm' }
  /** One llama.cpp GGUF file. */
  | { kind: 'gguf' };
export type ModelKindName = ModelKind['kind'];
/** Gate keys: thresholds a recipe checks against a stage's figures. */
export type GateKey = 'max_kl' | 'max_ppl_ratio' | 'min_top1' | 'min_tokens_per_s';
export const QUALITY_GATES: GateKey[] = ['max_kl', 'max_ppl_ratio', 'min_top1'];

/** Where a pass runs: the folders it reads, the one it writes, and the callbacks of whoever runs it. */
export interface RunContext {
  /** Folders by reference key: `input` (absent for a command with no model argument), `teacher`, `reference`, `draft`. */
  reads: Record<string, string | undefined>;
  /** Bench compares several artifacts given on the command line; a recipe stage reads its input alone. */
  inputs?: string[];
  output: string;
  /** What --eval measures against: the command's input, or the model a recipe run starts from. */
  source: string;
  device: Device;
  /** Distillation checkpoints when the options name no folder (a recipe keeps them in its run folder). */
  checkpointDir?: string;
  signal?: AbortSignal;
  /** Progress of one phase (`calibrate`, `write`, `eval`, ...). */
  onProgress?: (done: number, total: number, phase?: string) => void;
  /** Lines a terminal shows as the pass goes (the CLI decides whether and where). */
  onLog?: (text: string) => void;
}

/** Figures a recipe's report and gates read off a pass's report (null: not measured). */
export interface Measured {
  kl: number | null;
  top1: number | null;
  perplexity: number | null;
  pplRatio: number | null;
  tokensPerSecond: number | null;
}

export interface PassDefinition<S extends OptionSpecs = OptionSpecs, R = unknown> {
  name: string;
  options: S;
  /** What it can read per reference key (`input`, and each stage-reference option's key). */
  reads: Record<string, ModelKindName[]>;
  /** Said when a recipe feeds it what it cannot read. */
  readHint?: string;
  /** False when, given the options, the input is not read (a shallow student is cut from the teacher). */
  readsInput?: (o: OptionValues<S>) => boolean;
  /** What it writes given its options; null for passes that write figures (eval, bench). */
  writes: (o: OptionValues<S>) => ModelKind | null;
  /** Gates it can check given its options, and how to get a figure it does not measure. */
  figures: (o: OptionValues<S>) => GateKey[];
  gateHint?: string;
  /** Text options that read the recipe's `data` when a stage leaves them out, given the options. */
  dataDefaults?: (o: OptionValues<S>) => Array<keyof S & string>;
  /** Checks that need no file, before anything runs; throws OptionError naming the option. */
  validate?: (o: OptionValues<S>, given: ReadonlySet<string>) => void;
  run: (o: OptionValues<S>, ctx: RunContext) => Promise<R>;
  measured: (report: R) => Partial<Measured>;
}

/** Keeps a definition's option and report types while checking its shape. */
export function definePass<S extends OptionSpecs, R>(d: PassDefinition<S, R>): PassDefinition<S, R> {
  return d;
}

/** Quality figures of an eval report against its reference. */
export function quality(e: EvalReport | null): Partial<Measured> {
  return e?.reference ? { kl: e.reference.kl, top1: e.reference.top1, perplexity: e.perplexity, pplRatio: e.reference.pplRatio } : {};
}

/** `--eval <file>` after a pass that writes a model: its output against the source, or null. */
export function evalAfter(file: string | undefined, ctx: RunContext): Promise<EvalReport | null> {
  if (!file) return Promise.resolve(null);
  return compareModels(ctx.output, ctx.source, file, { device: ctx.device, onProgress: (d, t) => ctx.onProgress?.(d, t, 'eval') });
}
