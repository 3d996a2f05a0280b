// The recipe schema: one strict zod object per pass whose snake_case keys mirror that pass's CLI options
// (--block-size -> block_size), plus the keys every stage shares (name, input, gate) and the recipe's own.
// Checks that need more than one key (block sizes, N:M) stay with each pass's own validator.
import { z } from 'zod';
import { QUANT_FORMATS, QUANT_METHODS, QUANT_TARGETS } from '../passes/quantize/quantize.js';
import { PRUNE_METHODS } from '../passes/prune/prune.js';
import { LAYOUTS } from '../passes/export.js';
import { SHARD_ATTENTION_FORMS, SHARD_FORMATS } from '../passes/shard/shard.js';
import { ATTENTION_FORMS } from '../core/io.js';
import { VOCAB_MODES } from '../passes/shard/plan.js';
import { DEVICES } from '../runtime/device.js';

const int = (min = 0) => z.number().int().min(min);
const positive = () => z.number().positive();
const attention = z.enum(ATTENTION_FORMS);
const shardAttention = z.enum(SHARD_ATTENTION_FORMS);
/** A text file; `true` means the recipe's `data`. Paths are relative to the recipe file (or, from --set, to the working folder). */
const textFile = z.union([z.string().min(1), z.literal(true)]);
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
  name: z.string().regex(/^[a-z][a-z0-9_-]*$/, 'lower-case letters, digits, - and _, starting with a letter').optional(),
  /** The stage whose output this stage reads (default: the last stage that wrote a model, else the source). */
  input: stageRef.optional(),
  gate: gateSchema.optional(),
};

export const PASS_SCHEMAS = {
  prune: z.strictObject({
    pass: z.literal('prune'),
    ...common,
    sparsity: z.union([z.string(), z.number()]),
    method: z.enum(PRUNE_METHODS).default('magnitude'),
    scope: z.enum(['row', 'layer']).default('row'),
    calib: textFile.optional(),
    calib_samples: int(1).default(128),
    calib_seq_len: int(2).optional(),
    exclude: z.array(z.string()).default([]),
    dampening: z.number().nonnegative().default(0.01),
    sequential: z.boolean().default(true),
    eval: textFile.optional(),
  }),
  distill: z.strictObject({
    pass: z.literal('distill'),
    ...common,
    teacher: stageRef.default('source'),
    student_layers: int(1).optional(),
    student_layer_ids: z.array(int(0)).min(1).optional(),
    data: textFile.default(true),
    eval_data: textFile.optional(),
    eval_every: int(1).optional(),
    eval_limit: int(1).optional(),
    steps: int(1).default(800),
    batch: int(1).default(16),
    seq_len: int(2).optional(),
    lr: positive().default(3e-4),
    warmup: int(0).optional(),
    temperature: positive().default(2),
    alpha: z.number().nonnegative().default(0.1),
    hidden_loss: z.number().nonnegative().optional(),
    weight_decay: z.number().nonnegative().default(0.01),
    clip_norm: z.number().nonnegative().default(1),
    seed: int(0).default(0),
    keep_sparsity: z.boolean().default(false),
    max_minutes: positive().optional(),
    checkpoint_every: int(1).optional(),
    threads: int(1).optional(),
  }),
  quantize: z.strictObject({
    pass: z.literal('quantize'),
    ...common,
    to: z.enum(QUANT_TARGETS),
    method: z.enum(QUANT_METHODS).default('rtn'),
    block_size: int(1).default(32),
    asymmetric: z.boolean().default(false),
    accuracy_level: int(0).max(4).default(0),
    exclude: z.array(z.string()).default([]),
    quantize_embeddings: z.boolean().default(false),
    format: z.enum(QUANT_FORMATS).default('onnx'),
    attention: attention.default('fused'),
    calib: textFile.optional(),
    calib_samples: int(1).default(128),
    calib_seq_len: int(2).optional(),
    act_order: z.boolean().default(false),
    dampening: z.number().nonnegative().default(0.01),
    eval: textFile.optional(),
  }),
  export: z.strictObject({
    pass: z.literal('export'),
    ...common,
    attention: attention.default('fused'),
    layout: z.enum(LAYOUTS).default('llmopt'),
  }),
  shard: z.strictObject({
    pass: z.literal('shard'),
    ...common,
    tp: int(1).default(1),
    pp: int(1).optional(),
    stages: z.string().optional(),
    vocab: z.enum(VOCAB_MODES).default('replicated'),
    attention: shardAttention.default('fused'),
    format: z.enum(SHARD_FORMATS).default('onnx'),
  }),
  eval: z.strictObject({
    pass: z.literal('eval'),
    ...common,
    data: textFile.default(true),
    reference: stageRef.default('source'),
    batch_size: int(1).default(8),
    limit: int(1).optional(),
  }),
  bench: z.strictObject({
    pass: z.literal('bench'),
    ...common,
    batch: z.array(int(1)).default([1]),
    prompt_len: int(1).default(128),
    gen_len: int(1).default(128),
    prompt: z.string().optional(),
    reps: int(1).default(3),
    requests: int(1).optional(),
    arrival_rate: z.number().nonnegative().default(8),
    trace_input: z.tuple([int(1), int(1)]).optional(),
    trace_output: z.tuple([int(1), int(1)]).optional(),
    slots: int(1).optional(),
    seed: int(0).default(0),
    draft: stageRef.optional(),
    draft_tokens: int(1).default(4),
    temperature: z.number().nonnegative().default(0),
    top_k: int(0).default(0),
    top_p: z.number().min(0).max(1).default(1),
    threads: int(1).optional(),
  }),
} as const;

export type PassName = keyof typeof PASS_SCHEMAS;
export const PASS_NAMES = Object.keys(PASS_SCHEMAS) as PassName[];
export type StageOptions<P extends PassName = PassName> = P extends PassName ? z.infer<(typeof PASS_SCHEMAS)[P]> : never;

/** Keys naming a text file: resolved against the recipe's folder when read from it. */
export const PATH_KEYS = ['calib', 'eval', 'data', 'eval_data'] as const;

/** The recipe's own keys; `stages` are parsed one by one so that an error names its stage. */
export const recipeSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, ., - and _').optional(),
  description: z.string().optional(),
  /** The model a bare `llmopt run <recipe>` starts from, relative to the recipe file. */
  model: z.string().min(1).optional(),
  /** Default text for calibration, distillation and eval (stage keys set to `true` or left out). */
  data: z.string().min(1).optional(),
  device: z.enum(DEVICES).default('cpu'),
  stages: z.array(z.unknown()).min(1, 'a recipe needs at least one stage'),
});
