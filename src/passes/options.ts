// The vocabulary of pass options: each option is declared once (kind, help, default, bounds) and from
// that one object come its command-line flag and parser, its recipe key and zod schema, and its type.
import { z } from 'zod';
import { InputError } from '../core/errors.js';
import { DEVICES, type Device } from '../runtime/device.js';

/** How an option is spelled and read. */
export type OptionKind =
  | 'int'
  | 'number'
  | 'choice'
  | 'string'
  | 'boolean'
  | 'negatable'
  | 'repeatable'
  | 'commaList'
  | 'range'
  | 'textFile'
  | 'stageRef';

/** What a declaration of any kind may say. */
type Common<T> = {
  help: string;
  /** The --help placeholder, e.g. `<n>` (booleans have none). */
  arg?: string;
  default?: T;
  /** Required on the command line; in a recipe too, unless `recipeDefault` stands in. */
  required?: boolean;
  /** A short alias, e.g. `-o`. */
  short?: string;
  /** `cli`: a command-line option only (how to print, where to resume); `recipe`: a recipe key only. */
  only?: 'cli' | 'recipe';
  /** The recipe's default where it differs on purpose from the command line's (`true`: the recipe's data). */
  recipeDefault?: unknown;
};

/** One declared option. `T` is its value; `D` is true when it always has one (a default, or required). */
export interface Opt<T = unknown, D extends boolean = boolean> extends Common<T> {
  kind: OptionKind;
  /** A command-line string to a value; throws InputError naming `flag`. */
  parse?: (flag: string, value: string, previous: T | undefined) => T;
  /** The recipe value's schema, without its default. */
  schema: z.ZodType;
  /** Phantom: carries `D` for the derived types. */
  readonly always?: D;
}

// biome-ignore lint/suspicious/noExplicitAny: each option keeps its own value type; a union of them cannot be written here
export type OptionSpecs = Record<string, Opt<any, boolean>>;
type ValueOf<O> = O extends { default?: infer T; schema: z.ZodType } ? T : never;
type Always<S extends OptionSpecs> = { [K in keyof S]: S[K] extends { readonly always?: true } ? K : never }[keyof S];
/** The parsed values of a set of options: those with a default or required are always there. */
export type OptionValues<S extends OptionSpecs> = { -readonly [K in Always<S>]: ValueOf<S[K]> } & {
  -readonly [K in Exclude<keyof S, Always<S>>]?: ValueOf<S[K]>;
};

/** `blockSize` -> `--block-size`, or `--no-sequential` for a negatable boolean. */
export function flagOf(key: string, opt: Opt): string {
  const kebab = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  return opt.kind === 'negatable' ? `--no-${kebab}` : `--${kebab}`;
}

/** `blockSize` -> `block_size`: recipe keys are the flags in snake_case. */
export const recipeKeyOf = (key: string): string => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * Bad option values found by a pass's `validate`: the message is rendered with each option's name as
 * the reader spelled it (`--block-size` on the command line, `block_size` in a recipe).
 */
export class OptionError extends InputError {
  constructor(
    readonly key: string,
    readonly render: (name: (key: string) => string) => string,
  ) {
    super(render((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`));
  }
}

type Has<O> = O extends { default: unknown } ? true : O extends { required: true } ? true : false;

function opt<T, O extends Common<T>>(kind: OptionKind, o: O, schema: z.ZodType, parse?: Opt<T>['parse']): Opt<T, Has<O>> {
  return { kind, ...o, schema, parse } as Opt<T, Has<O>>;
}

const bounds = (min: number, max: number) => `${min > -Infinity ? ` >= ${min}` : ''}${max < Infinity ? ` <= ${max}` : ''}`;

export function parseInteger(flag: string, value: string, min = 0, max = Infinity): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new InputError(`${flag} ${value}: expected an integer${bounds(min, max)}`);
  return n;
}

export function parseNumber(flag: string, value: string, min = -Infinity, max = Infinity): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max)
    throw new InputError(`${flag} ${value}: expected a number${bounds(min, max)}`);
  return n;
}

export function parseChoice<T extends string>(flag: string, value: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(value)) return value as T;
  throw new InputError(`${flag} ${value}: choose one of ${choices.join(', ')}`);
}

/** An integer >= min (and <= max). */
export function int<const O extends Common<number> & { min?: number; max?: number }>(o: O): Opt<number, Has<O>> {
  const { min = 0, max = Infinity } = o;
  const schema = max < Infinity ? z.number().int().min(min).max(max) : z.number().int().min(min);
  return opt('int', { arg: '<n>', ...o }, schema, (flag, v) => parseInteger(flag, v, min, max));
}

/** A finite number in [min, max]; `positive` excludes 0 (as a minimum of Number.MIN_VALUE does on the command line). */
export function number<const O extends Common<number> & { min?: number; max?: number; positive?: boolean }>(o: O): Opt<number, Has<O>> {
  const min = o.positive ? Number.MIN_VALUE : (o.min ?? -Infinity);
  const max = o.max ?? Infinity;
  let schema = o.positive ? z.number().positive() : min > -Infinity ? z.number().min(min) : z.number();
  if (max < Infinity) schema = schema.max(max);
  return opt('number', o, schema, (flag, v) => parseNumber(flag, v, min, max));
}

export function choice<const C extends readonly string[], const O extends Common<C[number]>>(choices: C, o: O): Opt<C[number], Has<O>> {
  return opt('choice', o, z.enum(choices as unknown as [string, ...string[]]), (flag, v) => parseChoice(flag, v, choices));
}

export function string<const O extends Common<string>>(o: O): Opt<string, Has<O>> {
  return opt('string', o, z.string(), (_flag, v) => v);
}

/** A switch, off by default. */
export function boolean<const O extends Omit<Common<boolean>, 'default' | 'arg'>>(o: O): Opt<boolean, true> {
  return opt('boolean', { ...o, default: false }, z.boolean()) as Opt<boolean, true>;
}

/** A switch on by default, turned off by --no-<name>. */
export function negatable<const O extends Omit<Common<boolean>, 'default' | 'arg'>>(o: O): Opt<boolean, true> {
  return opt('negatable', { ...o, default: true }, z.boolean()) as Opt<boolean, true>;
}

/** A flag given once per value (--exclude a --exclude b); a list in a recipe. */
export function repeatable<const O extends Omit<Common<string[]>, 'default'>>(o: O): Opt<string[], true> {
  return opt<string[], O & { default: string[] }>('repeatable', { ...o, default: [] }, z.array(z.string()), (_flag, v, previous) => [
    ...(previous ?? []),
    v,
  ]);
}

/** Integers, comma-separated on the command line (`1,8`) and a list in a recipe; `what` names one of them. */
export function intList<const O extends Common<number[]> & { min?: number; what: string; nonEmpty?: boolean }>(
  o: O,
): Opt<number[], Has<O>> {
  const min = o.min ?? 0;
  const parse = (flag: string, value: string) =>
    value.split(',').map((v) => {
      const n = Number(v.trim());
      if (v.trim() === '' || !Number.isInteger(n) || n < min) {
        throw new InputError(`${flag} ${value}: ${o.what} "${v}" is not ${min === 1 ? 'a positive integer' : `an integer >= ${min}`}`);
      }
      return n;
    });
  const list = z.array(z.number().int().min(min));
  return opt('commaList', o, o.nonEmpty ? list.min(1) : list, parse);
}

/** A length or a range: `16-128` on the command line, `[16, 128]` in a recipe. */
export function range<const O extends Common<[number, number]>>(o: O): Opt<[number, number], Has<O>> {
  const parse = (flag: string, value: string): [number, number] => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(value.trim());
    const lo = Number(m?.[1]);
    const hi = Number(m?.[2] ?? m?.[1]);
    if (!m || lo < 1 || hi < lo) throw new InputError(`${flag} ${value}: expected a length or a range such as 16-128`);
    return [lo, hi];
  };
  return opt('range', { arg: '<range>', ...o }, z.tuple([z.number().int().min(1), z.number().int().min(1)]), parse);
}

/**
 * A text file. In a recipe `true` means the recipe's `data`, and paths are relative to the recipe file;
 * the loader resolves both, so a pass always sees a path.
 */
export function textFile<const O extends Common<string>>(o: O): Opt<string, Has<O>> {
  return opt('textFile', { arg: '<file>', ...o }, z.union([z.string().min(1), z.literal(true)]), (_flag, v) => v);
}

/** A model folder on the command line; in a recipe, an earlier stage's name or `source`. */
export function stageRef<const O extends Common<string>>(o: O): Opt<string, Has<O>> {
  return opt('stageRef', o, z.string().min(1), (_flag, v) => v);
}

/** An option whose command-line spelling and recipe schema are its own (e.g. --sparsity 2:4 or 0.5). */
export function custom<T, const O extends Common<T>>(
  o: O & { schema: z.ZodType; parse: (flag: string, value: string) => T },
): Opt<T, Has<O>> {
  const { schema, parse, ...rest } = o;
  return opt<T, O>('string', rest as unknown as O, schema, parse);
}

/** -o: the folder a pass writes (a recipe stage writes its own NN-<pass> folder). */
export function outputFolder(help: string) {
  return { output: string({ help, arg: '<dir>', short: '-o', required: true, only: 'cli' }) };
}

/** --json and --quiet: how the command line prints (a recipe prints its own report). */
export function printOptions(quiet: string) {
  return { json: boolean({ help: 'print the report as JSON', only: 'cli' }), quiet: boolean({ help: quiet, short: '-q', only: 'cli' }) };
}

/** Sharded models: a device per rank, comma-separated (`cuda,cuda,cpu,cpu`). */
export const rankDevices = custom<Device[], { help: string; arg: string; only: 'cli' }>({
  help: 'sharded models: a device per rank, e.g. cuda,cuda,cpu,cpu',
  arg: '<list>',
  only: 'cli',
  schema: z.array(z.enum(DEVICES)),
  parse: (flag, value) => value.split(',').map((d) => parseChoice(flag, d.trim(), DEVICES)),
});

/**
 * --device, --threads and, for passes that open artifacts (sharded ones too), --rank-devices;
 * a recipe names its device once at its top.
 */
export function deviceOptions<const O extends { threads?: 'cli'; rankDevices?: true }>(o: O) {
  return {
    device: choice(DEVICES, { help: `execution device: ${DEVICES.join(' | ')}`, arg: '<device>', default: 'cpu', only: 'cli' }),
    ...(o.rankDevices ? { rankDevices } : {}),
    threads: int({ help: 'CPU threads (default: all cores)', min: 1, ...(o.threads ? { only: o.threads } : {}) }),
  };
}
