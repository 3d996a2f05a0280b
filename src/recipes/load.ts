// Reads a recipe: finds the file (a path or a shipped recipe's name), parses the YAML, applies
// `--set stage.key=value` overrides and validates every stage against its pass's schema, so that an
// unknown key or a wrong type fails here, naming the file, the stage and the key, before anything runs.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYamlValue, parseDocument } from 'yaml';
import type { z } from 'zod';
import { InputError } from '../core/errors.js';
import type { Device } from '../runtime/device.js';
import { recipeKeyOf } from '../passes/options.js';
import { passDefinition } from '../passes/registry.js';
import { PASS_NAMES, PASS_SCHEMAS, PATH_KEYS, passValues, recipeSchema, type PassName, type StageOptions } from './schema.js';

/** Where the shipped recipes live (recipes/ of the package). */
export const SHIPPED_RECIPES = fileURLToPath(new URL('../../recipes/', import.meta.url));

export interface Stage {
  /** 0-based position. */
  index: number;
  name: string;
  /** Output folder inside the run folder: NN-<pass>. */
  dir: string;
  options: StageOptions;
  /** The pass options (camelCase keys) the stage sets itself, after --set: `validate` refuses some of them for some values. */
  given: string[];
}

export interface Recipe {
  /** The file as the user named it (for messages) and its absolute path. */
  file: string;
  path: string;
  /** The recipe's identity: `name:` or the file name; an output folder belongs to one recipe. */
  name: string;
  description: string | null;
  /** Absolute model folder a run starts from when none is given. */
  model: string | null;
  device: Device;
  stages: Stage[];
}

type Raw = Record<string, unknown>;

/** A recipe error: one line naming the file, the stage and the key. */
export function recipeError(file: string, where: { stage?: { index: number; name: string }; key?: string }, message: string): InputError {
  const stage = where.stage ? `stage ${where.stage.index + 1}${where.stage.name ? ` (${where.stage.name})` : ''}: ` : '';
  return new InputError(`${file}: ${stage}${where.key ? `${where.key}: ` : ''}${message}`);
}

/** The names of the shipped recipes. */
export function shippedRecipes(): string[] {
  return existsSync(SHIPPED_RECIPES)
    ? readdirSync(SHIPPED_RECIPES)
        .filter((f) => f.endsWith('.yaml'))
        .map((f) => f.slice(0, -5))
        .sort()
    : [];
}

/** A recipe argument as a file: an existing path, else the name of a shipped recipe. */
export function findRecipe(arg: string): string {
  if (existsSync(arg)) {
    if (statSync(arg).isDirectory())
      throw new InputError(`${arg}: is a folder; give a recipe file (.yaml) or a shipped recipe's name (${shippedRecipes().join(', ')})`);
    return arg;
  }
  const shipped = join(SHIPPED_RECIPES, `${arg}.yaml`);
  if (/^[a-z0-9][a-z0-9_-]*$/.test(arg) && existsSync(shipped)) return shipped;
  throw new InputError(`${arg}: recipe not found (neither a file nor a shipped recipe: ${shippedRecipes().join(', ')})`);
}

/** The first line of a zod error, named by its key path. */
function firstIssue(error: z.ZodError, schema?: { shape: Record<string, unknown> }): { key: string | undefined; message: string } {
  // An unknown key explains a missing one (a typo) better than the other way round.
  const issue = error.issues.find((i) => i.code === 'unrecognized_keys') ?? error.issues[0]!;
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    const known = schema && path.length === 0 ? ` (known keys: ${Object.keys(schema.shape).join(', ')})` : '';
    return { key: [...path, issue.keys[0]!].join('.'), message: `unknown key${known}` };
  }
  const message = issue.message.replace(/^Invalid input: /, '').replace(/^expected (.*), received undefined$/, 'missing (expected $1)');
  return { key: path.length ? path.join('.') : undefined, message };
}

/** Applies `stage.key=value` or `stage.gate.max_kl=value` (the value parsed as YAML, so 64 is a number and true a boolean). */
function applySet(file: string, stages: Raw[], names: string[], top: Raw, set: string): void {
  const m = /^(?:([^.=\s]+)\.)?([a-z_]+(?:\.[a-z0-9_]+)*)=(.*)$/s.exec(set);
  if (!m)
    throw new InputError(`--set ${set}: expected stage.key=value (e.g. quantize.block_size=64) or key=value for the recipe's own keys`);
  const [, stageName, keyPath, text] = m;
  let value: unknown;
  try {
    value = parseYamlValue(text!);
  } catch (e) {
    throw new InputError(`--set ${set}: the value is not valid YAML (${(e as Error).message.split('\n')[0]})`);
  }
  const keys = keyPath!.split('.');
  const key = keys.pop()!;
  // A file named on the command line is relative to where the command runs.
  if (((PATH_KEYS as readonly string[]).includes(key) || key === 'model') && typeof value === 'string') value = resolve(value);
  let target = top;
  if (stageName !== undefined) {
    const i = /^\d+$/.test(stageName) ? Number(stageName) - 1 : names.indexOf(stageName);
    if (!stages[i]) throw new InputError(`--set ${set}: ${file} has no stage "${stageName}" (stages: ${names.join(', ')})`);
    target = stages[i]!;
  }
  for (const k of keys) {
    if (target[k] === undefined) target[k] = {};
    if (typeof target[k] !== 'object' || target[k] === null) throw new InputError(`--set ${set}: ${k} is not a mapping`);
    target = target[k] as Raw;
  }
  target[key] = value;
}

function readText(file: string): string {
  if (!existsSync(file)) throw new InputError(`${file}: recipe not found`);
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(`${file}: cannot read the recipe (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Reads and validates `file` with `sets` applied; throws an InputError naming the stage and key. */
export function loadRecipe(file: string, sets: string[] = []): Recipe {
  const path = resolve(file);
  const doc = parseDocument(readText(file));
  if (doc.errors.length) throw new InputError(`${file}: invalid YAML: ${doc.errors[0]!.message.split('\n')[0]!.replace(/:$/, '')}`);
  const raw = doc.toJS() as unknown;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new InputError(`${file}: a recipe is a YAML mapping with a stages: list`);
  const top = raw as Raw;
  const here = dirname(path);
  const fromRecipe = (v: unknown) => (typeof v === 'string' && !isAbsolute(v) ? resolve(here, v) : v);
  if ('model' in top) top.model = fromRecipe(top.model);
  if ('data' in top) top.data = fromRecipe(top.data);

  const rawStages = Array.isArray(top.stages) ? (top.stages as unknown[]) : [];
  const names = rawStages.map((s, i) => {
    const stage = { index: i, name: '' };
    if (s === null || typeof s !== 'object' || Array.isArray(s))
      throw recipeError(file, { stage }, 'a stage is a mapping with a pass: key');
    const r = s as Raw;
    if (r.pass === undefined) throw recipeError(file, { stage, key: 'pass' }, `missing (choose one of ${PASS_NAMES.join(', ')})`);
    if (!PASS_NAMES.includes(r.pass as PassName))
      throw recipeError(file, { stage, key: 'pass' }, `unknown pass "${String(r.pass)}" (choose one of ${PASS_NAMES.join(', ')})`);
    for (const k of PATH_KEYS) if (k in r) r[k] = fromRecipe(r[k]);
    return typeof r.name === 'string' ? r.name : String(r.pass);
  });
  for (const s of sets) applySet(file, rawStages as Raw[], names, top, s);

  const parsedTop = recipeSchema.safeParse(top);
  if (!parsedTop.success) {
    const { key, message } = firstIssue(parsedTop.error, recipeSchema);
    throw recipeError(file, { key }, message);
  }
  const recipe: Recipe = {
    file,
    path,
    name: parsedTop.data.name ?? basename(path, extname(path)),
    description: parsedTop.data.description ?? null,
    model: parsedTop.data.model ?? null,
    device: parsedTop.data.device,
    stages: [],
  };
  const data = parsedTop.data.data;
  (rawStages as Raw[]).forEach((r, index) => {
    const stage = { index, name: names[index]! };
    const schema = PASS_SCHEMAS[r.pass as PassName];
    const parsed = schema.safeParse(r);
    if (!parsed.success) {
      const { key, message } = firstIssue(parsed.error, schema);
      throw recipeError(file, { stage, key }, message);
    }
    if (stage.name === 'source')
      throw recipeError(file, { stage, key: 'name' }, '"source" names the model the run starts from; choose another name');
    const first = names.indexOf(stage.name);
    if (first !== index)
      throw recipeError(file, { stage, key: 'name' }, `stage ${first + 1} has the same name; give one of them a name: key`);
    const options = parsed.data as StageOptions;
    const def = passDefinition(options.pass);
    // Text options some settings need (a calibrated method's calib) read the recipe's data unless the stage names its own.
    for (const key of def.dataDefaults?.(passValues(options) as never) ?? [])
      if (options[recipeKeyOf(key)] === undefined) options[recipeKeyOf(key)] = true;
    for (const k of PATH_KEYS) {
      if (options[k] === true) {
        if (data === undefined)
          throw recipeError(
            file,
            { stage, key: k },
            `missing ${k === 'calib' ? 'calibration data' : 'text'}: give ${k}: <file> here, or data: <file> at the top of the recipe`,
          );
        options[k] = data;
      }
      if (typeof options[k] === 'string' && !existsSync(options[k] as string))
        throw recipeError(file, { stage, key: k }, `${options[k]}: file not found`);
    }
    const given = Object.keys(def.options).filter((k) => recipeKeyOf(k) in r);
    recipe.stages.push({ index, name: stage.name, dir: `${String(index + 1).padStart(2, '0')}-${options.pass}`, options, given });
  });
  return recipe;
}
