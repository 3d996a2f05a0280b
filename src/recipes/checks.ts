// Checks that span stages, run before anything is written: what each stage reads (its input and the
// stages it names) can be read by its pass (no prune after quantize, no distill of an int4 artifact),
// every gate has a figure to check, and each pass's own option checks pass.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { isArtifact, openArtifact } from '../formats/artifact.js';
import { isShardedModel } from '../runtime/sharded/manifest.js';
import { validateQuantizeOptions } from '../passes/quantize/quantize.js';
import { pruneOptions, quantizeOptions } from './pass-options.js';
import { recipeError, type Recipe, type Stage } from './load.js';
import type { GateKey, PassName } from './schema.js';

/** What a folder holds, as far as the next pass cares. */
export type ModelKind = { kind: 'hf' } | { kind: 'hf-quantized' } | { kind: 'artifact'; precision: string } | { kind: 'sharded' } | { kind: 'tensorrt-llm' };

/** A stage with the folders it reads named: `source` or an earlier stage's name. */
export interface PlannedStage {
  stage: Stage;
  /** Reference key (input, teacher, reference, draft) -> `source` or a stage name. */
  refs: Record<string, string>;
  /** What the stage writes, or null for eval and bench (which write figures). */
  writes: ModelKind | null;
}

export function describeKind(k: ModelKind): string {
  switch (k.kind) {
    case 'hf':
      return 'a float Hugging Face folder';
    case 'hf-quantized':
      return 'a quantized (compressed-tensors) Hugging Face folder';
    case 'artifact':
      return `${/^[aeiou]/.test(k.precision) ? 'an' : 'a'} ${k.precision} ONNX artifact`;
    case 'sharded':
      return 'a sharded ONNX model';
    case 'tensorrt-llm':
      return 'a TensorRT-LLM checkpoint';
  }
}

/** The kind of the model a run starts from; a missing folder is bad input. */
export function sourceKind(dir: string): ModelKind {
  if (!existsSync(dir)) throw new InputError(`${dir}: model folder not found`);
  if (isShardedModel(dir)) return { kind: 'sharded' };
  if (isArtifact(dir)) return { kind: 'artifact', precision: openArtifact(dir).manifest?.model.precision ?? 'float32' };
  if (!existsSync(join(dir, 'config.json'))) throw new InputError(`${dir}: not a model folder (no config.json)`);
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  return config.quantization_config ? { kind: 'hf-quantized' } : { kind: 'hf' };
}

const RUNNABLE: ModelKind['kind'][] = ['artifact', 'sharded'];
/** What each pass can read, per reference key. */
const READS: Record<PassName, Record<string, ModelKind['kind'][]>> = {
  prune: { input: ['hf'] },
  quantize: { input: ['hf'] },
  distill: { input: ['hf'], teacher: ['hf'] },
  export: { input: ['hf', 'hf-quantized'] },
  shard: { input: ['hf'] },
  eval: { input: ['hf', 'hf-quantized', ...RUNNABLE], reference: ['hf', 'hf-quantized', ...RUNNABLE] },
  bench: { input: RUNNABLE, draft: RUNNABLE },
};

const HINTS: Partial<Record<PassName, string>> = {
  prune: 'prune the float model first, then quantize or export',
  quantize: 'quantize reads the float checkpoint: put quantize after prune and distill, and let it write the ONNX artifact',
  distill: 'distill the float (pruned) model, then quantize',
  shard: 'shard the float checkpoint',
  bench: 'bench runs an ONNX artifact: add an export or quantize stage before it',
};

function writes(stage: Stage): ModelKind | null {
  const o = stage.options;
  switch (o.pass) {
    case 'prune':
    case 'distill':
      return { kind: 'hf' };
    case 'quantize':
      return o.format === 'compressed-tensors' ? { kind: 'hf-quantized' } : { kind: 'artifact', precision: o.to };
    case 'export':
      return { kind: 'artifact', precision: 'float32' };
    case 'shard':
      return o.format === 'tensorrt-llm' ? { kind: 'tensorrt-llm' } : { kind: 'sharded' };
    default:
      return null;
  }
}

/** Gates each stage can check: quality figures where it measures them, tokens/s where it benches. */
function figures(stage: Stage): Set<GateKey> {
  const o = stage.options;
  const quality: GateKey[] = ['max_kl', 'max_ppl_ratio', 'min_top1'];
  if (o.pass === 'eval' || ((o.pass === 'prune' || o.pass === 'quantize') && o.eval !== undefined) || (o.pass === 'distill' && o.eval_data !== undefined)) return new Set(quality);
  if (o.pass === 'bench') return new Set(['min_tokens_per_s']);
  return new Set();
}

const GATE_HINT: Record<string, string> = {
  prune: '; set eval: true on the stage to measure it, or gate an eval stage',
  quantize: '; set eval: true on the stage to measure it, or gate an eval stage',
  distill: '; set eval_data: true on the stage to measure it, or gate an eval stage',
};

/** A pass's own validator, its message re-keyed from CLI flags to recipe keys. */
function passCheck(file: string, stage: Stage, check: () => void): void {
  try {
    check();
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    throw recipeError(file, { stage }, e.message.replace(/--([a-z][a-z-]*)/g, (_, k: string) => k.replace(/-/g, '_')));
  }
}

/** Validates the whole recipe against the model it starts from; returns the stages with their references. */
export function checkRecipe(recipe: Recipe, source: string): PlannedStage[] {
  const kinds = new Map<string, { kind: ModelKind; by: Stage | null }>([['source', { kind: sourceKind(source), by: null }]]);
  let current = 'source';
  const planned: PlannedStage[] = [];
  for (const stage of recipe.stages) {
    const o = stage.options;
    const shallow = o.pass === 'distill' && (o.student_layers !== undefined || o.student_layer_ids !== undefined);
    const refs: Record<string, string> = { input: o.input ?? current };
    if (o.pass === 'distill') refs.teacher = o.teacher;
    if (o.pass === 'eval') refs.reference = o.reference;
    if (o.pass === 'bench' && o.draft !== undefined) refs.draft = o.draft;
    for (const [key, ref] of Object.entries(refs)) {
      const target = kinds.get(ref);
      if (!target) {
        const later = recipe.stages.some((s) => s.name === ref);
        throw recipeError(recipe.file, { stage, key }, later ? `"${ref}" is a later stage or writes no model; name source or an earlier stage that writes a model` : `no stage named "${ref}" (name source or an earlier stage)`);
      }
      // A shallow student is cut from the teacher: the stage's input is not read.
      if (key === 'input' && shallow) continue;
      const allowed = READS[o.pass][key]!;
      if (!allowed.includes(target.kind.kind)) {
        const what = target.by ? `${o.pass} cannot follow ${target.by.options.pass}: stage ${target.by.index + 1} (${target.by.name}) writes ${describeKind(target.kind)}` : `the source ${source} is ${describeKind(target.kind)}`;
        throw recipeError(recipe.file, { stage, key: key === 'input' ? 'pass' : key }, `${what}, which ${o.pass} cannot read${HINTS[o.pass] ? `; ${HINTS[o.pass]}` : ''}`);
      }
    }
    if (o.pass === 'prune') passCheck(recipe.file, stage, () => pruneOptions(o));
    if (o.pass === 'quantize') passCheck(recipe.file, stage, () => validateQuantizeOptions(quantizeOptions(o)));
    if (o.pass === 'distill' && o.student_layers !== undefined && o.student_layer_ids !== undefined) throw recipeError(recipe.file, { stage, key: 'student_layer_ids' }, 'student_layers and student_layer_ids are alternatives: give one');
    const produced = figures(stage);
    for (const gate of Object.keys(o.gate ?? {}) as GateKey[]) {
      if (!produced.has(gate)) {
        const figure = gate === 'min_tokens_per_s' ? 'tokens/s (only bench measures it)' : `${gate.replace(/^(max|min)_/, '').replace('ppl_ratio', 'perplexity ratio').replace('kl', 'KL').replace('top1', 'top-1')} figure`;
        throw recipeError(recipe.file, { stage, key: `gate.${gate}` }, `${o.pass} produces no ${figure} here${GATE_HINT[o.pass] ?? ''}`);
      }
    }
    const out = writes(stage);
    if (out) {
      kinds.set(stage.name, { kind: out, by: stage });
      current = stage.name;
    }
    planned.push({ stage, refs, writes: out });
  }
  return planned;
}
