// A pass's command, derived from its definition: every declared option becomes a flag (parser, default,
// help), the options are validated up front, and the pass runs with progress bars; printing stays per command.
import { Command, Option } from 'commander';
import { flagOf, type Opt } from '../passes/options.js';
import type { PassDefinition, RunContext } from '../passes/pass.js';
import { PASSES, type PassName } from '../passes/registry.js';
import { Output } from './output.js';
import { modelFolderOf } from '../model/gguf-model.js';

/** A command with the flags of a pass's command-line options, in their declared order. */
export function passCommand(name: PassName): Command {
  const command = new Command(name);
  for (const [key, opt] of Object.entries((PASSES[name] as unknown as PassDefinition).options)) {
    if (opt.only !== 'recipe') command.addOption(flagOption(key, opt));
  }
  return command;
}

function flagOption(key: string, opt: Opt): Option {
  const flag = flagOf(key, opt);
  const o = new Option(`${opt.short ? `${opt.short}, ` : ''}${flag}${opt.arg ? ` ${opt.arg}` : ''}`, opt.help);
  if (opt.parse) o.argParser((value: string, previous: unknown) => opt.parse!(flag, value, previous));
  // Switches show no "(default: false)"; a negatable one defaults to true by itself.
  if (opt.default !== undefined && opt.kind !== 'boolean' && opt.kind !== 'negatable') o.default(opt.default);
  if (opt.required) o.makeOptionMandatory();
  return o;
}

/** The parsed options with every default filled in, and the keys the user gave. */
function parsedOptions(def: PassDefinition, command: Command): { values: Record<string, unknown>; given: Set<string> } {
  const values = { ...command.opts() };
  const given = new Set<string>();
  for (const [key, opt] of Object.entries(def.options)) {
    if (values[key] === undefined && opt.default !== undefined) values[key] = opt.default;
    if (command.getOptionValueSource(key) === 'cli') given.add(key);
  }
  return { values, given };
}

/**
 * A progress bar per phase of the pass (a new phase stops the bar before it); `labels` names them,
 * the pass's name standing in for a phase without a label.
 */
function phaseBars(out: Output, name: string, labels: Record<string, string>) {
  let current: { phase: string; bar: ReturnType<Output['progress']> } | null = null;
  const stop = () => current?.bar.stop();
  const update = (done: number, total: number, phase = '') => {
    if (current?.phase !== phase) {
      stop();
      current = { phase, bar: out.progress(labels[phase] ?? name) };
    }
    current.bar.update(done, total);
  };
  return { update, stop };
}

/** What a pass's run returns. */
type ReportOf<N extends PassName> = Awaited<ReturnType<(typeof PASSES)[N]['run']>>;

export interface PassAction<R> {
  /** Progress bar labels by phase. */
  labels?: Record<string, string>;
  /** Ctrl-C asks the pass to stop (distill writes a checkpoint first) instead of ending the process. */
  interruptible?: boolean;
  /** Prints the report (or, with --json, its JSON). */
  print: (report: R, o: Record<string, unknown>, out: Output) => void;
}

/**
 * The action of a pass's command: validates the options (naming flags), runs the pass on the command's
 * model argument (or, for bench, its list of artifacts) and prints the report.
 */
export function passAction<N extends PassName>(name: N, opts: PassAction<ReportOf<N>>): (...args: unknown[]) => Promise<void> {
  const def = PASSES[name] as unknown as PassDefinition<never, ReportOf<N>>;
  return async (...args: unknown[]) => {
    const command = args.at(-1) as Command;
    const positional = args.slice(0, -2);
    const { values: o, given } = parsedOptions(def as unknown as PassDefinition, command);
    def.validate?.(o as never, given);
    const out = new Output({ json: Boolean(o.json), quiet: Boolean(o.quiet) });
    const input = positional[0];
    const reads: RunContext['reads'] = { input: typeof input === 'string' ? input : undefined };
    for (const [key, opt] of Object.entries((def as unknown as PassDefinition).options))
      if (opt.kind === 'stageRef') reads[key] = o[key] as string | undefined;
    // A GGUF file is read through its companion folder, as every pass reads a model folder.
    for (const [key, path] of Object.entries(reads)) if (path !== undefined) reads[key] = await modelFolderOf(path);
    const abort = new AbortController();
    const onSigint = () => {
      out.log('\ninterrupted: writing a checkpoint after this step ...');
      abort.abort();
    };
    if (opts.interruptible) process.once('SIGINT', onSigint);
    const bars = phaseBars(out, name, opts.labels ?? {});
    const ctx: RunContext = {
      reads,
      inputs: Array.isArray(input) ? (input as string[]) : undefined,
      output: o.output as string,
      source: reads.input ?? '',
      device: (o.device as RunContext['device']) ?? 'cpu',
      signal: abort.signal,
      onProgress: bars.update,
      onLog: (text) => out.log(text),
    };
    const report = await def.run(o as never, ctx).finally(() => {
      bars.stop();
      process.off('SIGINT', onSigint);
    });
    opts.print(report, o, out);
  };
}
