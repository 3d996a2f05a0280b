// The recipe schema: one strict zod object per pass, derived from its definition in the pass registry
// (snake_case keys = its CLI flags, same defaults), plus the keys every stage shares (name, input, gate)
// and the recipe's own. Checks that need more than one key are each definition's `validate`.
import { z } from 'zod';
import { recipeKeyOf, type Opt } from '../passes/options.js';
import { PASS_NAMES, passDefinition, type PassName } from '../passes/registry.js';
import { DEVICES } from '../runtime/device.js';

/** An earlier stage's name, or `source` (the model the run starts from). */
const stageRef = z.string().min(1);

/** Thresholds checked against a stage's figures once it has run; a failed one stops the run (exit 1). */
export const gateSchema = z.strictObject({
  max_kl: z.number().nonnegative().optional(),
  max_ppl_ratio: z.number().positive().optional(),
  min_top1: z.number().min(0).max(1).optional(),
  min_tokens_per_s: z.number().nonnegative().optional(),
});
export type Gate = z.infer<typeof gateSchema>;
export type GateKey = keyof Gate;

/** Keys every stage may carry. */
const common = {
  name: z
    .string()
    .regex(/^[a-z][a-z0-9_-]*$/, 'lower-case letters, digits, - and _, starting with a letter')
    .optional(),
  /** The stage whose output this stage reads (default: the last stage that wrote a model, else the source). */
  input: stageRef.optional(),
  gate: gateSchema.optional(),
};

/** A declared option as a recipe key: the command line's default unless the recipe has its own. */
function recipeField(opt: Opt): z.ZodType {
  const fallback = opt.recipeDefault !== undefined ? opt.recipeDefault : opt.default;
  if (fallback !== undefined) return opt.schema.default(fallback as never);
  return opt.required ? opt.schema : opt.schema.optional();
}

function stageSchema(pass: PassName) {
  const shape: Record<string, z.ZodType> = { pass: z.literal(pass), ...common };
  for (const [key, opt] of Object.entries(passDefinition(pass).options)) if (opt.only !== 'cli') shape[recipeKeyOf(key)] = recipeField(opt);
  return z.strictObject(shape);
}

export { PASS_NAMES, type PassName };
export const PASS_SCHEMAS = Object.fromEntries(PASS_NAMES.map((p) => [p, stageSchema(p)])) as Record<
  PassName,
  ReturnType<typeof stageSchema>
>;

/** A stage as validated: its pass's recipe keys (snake_case), with defaults filled in. */
export type StageOptions = { pass: PassName; name?: string; input?: string; gate?: Gate } & Record<string, unknown>;

/** Keys naming a text file: resolved against the recipe's folder when read from it. */
export const PATH_KEYS: readonly string[] = [
  ...new Set(
    PASS_NAMES.flatMap((p) =>
      Object.entries(passDefinition(p).options)
        .filter(([, o]) => o.kind === 'textFile' && o.only !== 'cli')
        .map(([k]) => recipeKeyOf(k)),
    ),
  ),
];

/** A stage's options as its pass's (camelCase) option values; command-line-only options take their defaults. */
export function passValues(options: StageOptions): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  for (const [key, opt] of Object.entries(passDefinition(options.pass).options))
    values[key] = opt.only === 'cli' ? opt.default : options[recipeKeyOf(key)];
  return values;
}

/** The recipe's own keys; `stages` are parsed one by one so that an error names its stage. */
export const recipeSchema = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, ., - and _')
    .optional(),
  description: z.string().optional(),
  /** The model a bare `llmopt run <recipe>` starts from, relative to the recipe file. */
  model: z.string().min(1).optional(),
  /** Default text for calibration, distillation and eval (stage keys set to `true` or left out). */
  data: z.string().min(1).optional(),
  device: z.enum(DEVICES).default('cpu'),
  stages: z.array(z.unknown()).min(1, 'a recipe needs at least one stage'),
});
