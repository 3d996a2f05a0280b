// Checks that span stages, run before anything is written: what each stage reads (its input and the
// stages it names) can be read by its pass (no prune after quantize, no distill of an int4 artifact),
// every gate has a figure to check, and each pass's own option checks pass.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { isArtifact } from '../formats/artifact.js';
import { openArtifact } from '../model/artifact.js';
import { isShardedModel } from '../runtime/sharded/manifest.js';
import { OptionError, recipeKeyOf } from '../passes/options.js';
import type { GateKey, ModelKind } from '../passes/pass.js';
import { passDefinition } from '../passes/registry.js';
import { recipeError, type Recipe, type Stage } from './load.js';
import { passValues } from './schema.js';

export type { ModelKind };
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
      return 'a quantized Hugging Face folder (compressed-tensors, GPTQ or AWQ)';
    case 'artifact':
      return `${/^[aeiou]/.test(k.precision) ? 'an' : 'a'} ${k.precision} ONNX artifact`;
    case 'sharded':
      return 'a sharded ONNX model';
    case 'tensorrt-llm':
      return 'a TensorRT-LLM checkpoint';
    case 'gguf':
      return 'a GGUF file (llama.cpp)';
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

/** A pass's own validator; an OptionError names the recipe key of each option it mentions. */
function passCheck(file: string, stage: Stage, check: () => void): void {
  try {
    check();
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    throw recipeError(file, { stage }, e instanceof OptionError ? e.render(recipeKeyOf) : e.message);
  }
}

/** Validates the whole recipe against the model it starts from; returns the stages with their references. */
export function checkRecipe(recipe: Recipe, source: string): PlannedStage[] {
  const kinds = new Map<string, { kind: ModelKind; by: Stage | null }>([['source', { kind: sourceKind(source), by: null }]]);
  let current = 'source';
  const planned: PlannedStage[] = [];
  for (const stage of recipe.stages) {
    const o = stage.options;
    const def = passDefinition(o.pass);
    const values = passValues(o);
    const refs: Record<string, string> = { input: o.input ?? current };
    for (const [key, opt] of Object.entries(def.options)) {
      const ref = o[recipeKeyOf(key)];
      if (opt.kind === 'stageRef' && opt.only !== 'cli' && typeof ref === 'string') refs[recipeKeyOf(key)] = ref;
    }
    for (const [key, ref] of Object.entries(refs)) {
      const target = kinds.get(ref);
      if (!target) {
        const later = recipe.stages.some((s) => s.name === ref);
        throw recipeError(
          recipe.file,
          { stage, key },
          later
            ? `"${ref}" is a later stage or writes no model; name source or an earlier stage that writes a model`
            : `no stage named "${ref}" (name source or an earlier stage)`,
        );
      }
      if (key === 'input' && def.readsInput?.(values) === false) continue;
      const allowed = def.reads[key]!;
      if (!allowed.includes(target.kind.kind)) {
        const what = target.by
          ? `${o.pass} cannot follow ${target.by.options.pass}: stage ${target.by.index + 1} (${target.by.name}) ` +
            `writes ${describeKind(target.kind)}`
          : `the source ${source} is ${describeKind(target.kind)}`;
        throw recipeError(
          recipe.file,
          { stage, key: key === 'input' ? 'pass' : key },
          `${what}, which ${o.pass} cannot read${def.readHint ? `; ${def.readHint}` : ''}`,
        );
      }
    }
    passCheck(recipe.file, stage, () => def.validate?.(values, new Set(stage.given)));
    const produced = new Set(def.figures(values));
    for (const gate of Object.keys(o.gate ?? {}) as GateKey[]) {
      if (!produced.has(gate)) {
        const figure =
          gate === 'min_tokens_per_s'
            ? 'tokens/s (only bench measures it)'
            : `${gate
                .replace(/^(max|min)_/, '')
                .replace('ppl_ratio', 'perplexity ratio')
                .replace('kl', 'KL')
                .replace('top1', 'top-1')} figure`;
        throw recipeError(recipe.file, { stage, key: `gate.${gate}` }, `${o.pass} produces no ${figure} here${def.gateHint ?? ''}`);
      }
    }
    const out = def.writes(values);
    if (out) {
      kinds.set(stage.name, { kind: out, by: stage });
      current = stage.name;
    }
    planned.push({ stage, refs, writes: out });
  }
  return planned;
}
