// The pass registry keeps the command line and the recipes in step: every flag of a pass has a recipe key
// (or is declared command-line only) with the same default, and today's flags, keys and defaults stay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Option } from 'commander';
import { program } from '../../src/cli/main.js';
import { flagOf, recipeKeyOf } from '../../src/passes/options.js';
import { PASS_NAMES, passDefinition } from '../../src/passes/registry.js';
import { PASS_SCHEMAS } from '../../src/recipes/schema.js';

const STAGE_KEYS = ['pass', 'name', 'input', 'gate'];
const commands = program().commands;
const flags = (name: string): readonly Option[] => commands.find((c) => c.name() === name)!.options;
/** What the schema fills in for an absent recipe key (undefined: nothing; 'required': it must be there). */
function recipeDefault(pass: keyof typeof PASS_SCHEMAS, key: string): unknown {
  const r = PASS_SCHEMAS[pass].shape[key]!.safeParse(undefined);
  return r.success ? r.data : 'required';
}

test('every flag of a pass has a recipe key with the same default, or is declared command-line only', () => {
  for (const pass of PASS_NAMES) {
    const def = passDefinition(pass);
    const declared = new Map(Object.entries(def.options).map(([k, o]) => [flagOf(k, o), { key: k, opt: o }]));
    for (const flag of flags(pass)) {
      const d = declared.get(flag.long!);
      assert.ok(d, `${pass} ${flag.long}: a flag no definition declares`);
      if (d.opt.only === 'cli') continue;
      const key = recipeKeyOf(d.key);
      assert.ok(key in PASS_SCHEMAS[pass].shape, `${pass} ${flag.long}: no recipe key ${key}`);
      // A recipe default of its own (the recipe's data, the source) is declared as such.
      if (d.opt.recipeDefault !== undefined) continue;
      const cliDefault = flag.defaultValue ?? (flag.negate ? true : d.opt.kind === 'boolean' ? false : undefined);
      assert.deepEqual(recipeDefault(pass, key), flag.mandatory ? 'required' : cliDefault, `${pass} ${flag.long} / ${key}`);
    }
    const keys = new Set(
      Object.entries(def.options)
        .filter(([, o]) => o.only !== 'cli')
        .map(([k]) => recipeKeyOf(k)),
    );
    for (const key of Object.keys(PASS_SCHEMAS[pass].shape))
      assert.ok(keys.has(key) || STAGE_KEYS.includes(key), `${pass}.${key}: undeclared`);
  }
});

// Today's flags and recipe keys with their defaults, listed by hand from the code before the registry:
// a refactor that drops one or changes a default fails here.
const FLAGS: Record<string, string[]> = {
  // attention, accuracy level and embeddings: no fixed default since the device picks them (--device, default cpu).
  export: [
    '--output (required)',
    '--format="onnx"',
    '--dtype=[]',
    '--attention',
    '--device="cpu"',
    '--layout="llmopt"',
    '--json',
    '--quiet',
  ],
  quantize: [
    '--output (required)',
    '--to (required)',
    '--method="rtn"',
    '--block-size=32',
    '--asymmetric',
    '--accuracy-level',
    '--exclude=[]',
    '--quantize-embeddings',
    '--format="onnx"',
    '--no-fallback',
    '--attention',
    '--device="cpu"',
    '--calib',
    '--calib-samples=128',
    '--calib-seq-len',
    '--act-order',
    '--dampening=0.01',
    '--eval',
    '--json',
    '--quiet',
  ],
  prune: [
    '--output (required)',
    '--sparsity (required)',
    '--method="magnitude"',
    '--scope="row"',
    '--calib',
    '--calib-samples=128',
    '--calib-seq-len',
    '--exclude=[]',
    '--dampening=0.01',
    '--no-sequential',
    '--eval',
    '--json',
    '--quiet',
  ],
  distill: [
    '--device="cpu"',
    '--threads',
    '--teacher (required)',
    '--student',
    '--student-layers',
    '--student-layer-ids',
    '--data (required)',
    '--eval-data',
    '--eval-every',
    '--eval-limit',
    '--steps=800',
    '--batch=16',
    '--seq-len',
    '--lr=0.0003',
    '--warmup',
    '--temperature=2',
    '--alpha=0.1',
    '--hidden-loss',
    '--weight-decay=0.01',
    '--clip-norm=1',
    '--seed=0',
    '--keep-sparsity',
    '--quantize-aware',
    '--qat-block-size=32',
    '--qat-asymmetric',
    '--qat-float-embeddings',
    '--max-minutes',
    '--checkpoint-every',
    '--checkpoint-dir',
    '--resume',
    '--output (required)',
    '--json',
    '--quiet',
  ],
  shard: [
    '--output (required)',
    '--tp=1',
    '--pp',
    '--stages',
    '--vocab="replicated"',
    '--attention="fused"',
    '--format="onnx"',
    '--json',
    '--quiet',
  ],
  eval: [
    '--device="cpu"',
    '--rank-devices',
    '--threads',
    '--data (required)',
    '--reference',
    '--max-kl',
    '--min-top1',
    '--max-ppl-ratio',
    '--batch-size=8',
    '--limit',
    '--chat',
    '--json',
    '--quiet',
  ],
  bench: [
    '--device="cpu"',
    '--rank-devices',
    '--threads',
    '--batch',
    '--prompt-len=128',
    '--gen-len=128',
    '--prompt',
    '--reps=3',
    '--requests',
    '--arrival-rate=8',
    '--trace-input',
    '--trace-output',
    '--slots',
    '--seed=0',
    '--draft',
    '--draft-tokens=4',
    '--temperature=0',
    '--top-k=0',
    '--top-p=1',
    '--json',
    '--chart',
    '--quiet',
  ],
};
const KEYS: Record<string, string[]> = {
  prune: [
    'sparsity (required)',
    'method="magnitude"',
    'scope="row"',
    'calib',
    'calib_samples=128',
    'calib_seq_len',
    'exclude=[]',
    'dampening=0.01',
    'sequential=true',
    'eval',
  ],
  distill: [
    'teacher="source"',
    'student_layers',
    'student_layer_ids',
    'data=true',
    'eval_data',
    'eval_every',
    'eval_limit',
    'steps=800',
    'batch=16',
    'seq_len',
    'lr=0.0003',
    'warmup',
    'temperature=2',
    'alpha=0.1',
    'hidden_loss',
    'weight_decay=0.01',
    'clip_norm=1',
    'seed=0',
    'keep_sparsity=false',
    'quantize_aware',
    'qat_block_size=32',
    'qat_asymmetric=false',
    'qat_float_embeddings=false',
    'max_minutes',
    'checkpoint_every',
    'threads',
  ],
  quantize: [
    'to (required)',
    'method="rtn"',
    'block_size=32',
    'asymmetric=false',
    'accuracy_level',
    'exclude=[]',
    'quantize_embeddings=false',
    'format="onnx"',
    'fallback=true',
    'attention',
    'calib',
    'calib_samples=128',
    'calib_seq_len',
    'act_order=false',
    'dampening=0.01',
    'eval',
  ],
  export: ['format="onnx"', 'dtype=[]', 'attention', 'layout="llmopt"'],
  shard: ['tp=1', 'pp', 'stages', 'vocab="replicated"', 'attention="fused"', 'format="onnx"'],
  eval: ['data=true', 'reference="source"', 'batch_size=8', 'limit'],
  bench: [
    'batch=[1]',
    'prompt_len=128',
    'gen_len=128',
    'prompt',
    'reps=3',
    'requests',
    'arrival_rate=8',
    'trace_input',
    'trace_output',
    'slots',
    'seed=0',
    'draft',
    'draft_tokens=4',
    'temperature=0',
    'top_k=0',
    'top_p=1',
    'threads',
  ],
};

// Flags and keys added since are welcome (the test above gives each a recipe key); these must stay as they were.
test("today's flags, recipe keys and their defaults are unchanged", () => {
  const missing = (got: string[], expected: string[]) => expected.filter((e) => !got.includes(e));
  for (const [pass, expected] of Object.entries(FLAGS)) {
    const got = flags(pass).map(
      (o) => o.long + (o.defaultValue === undefined ? '' : `=${JSON.stringify(o.defaultValue)}`) + (o.mandatory ? ' (required)' : ''),
    );
    assert.deepEqual(missing(got, expected), [], `${pass}: dropped or changed (now: ${got.join(' ')})`);
  }
  for (const [pass, expected] of Object.entries(KEYS)) {
    const shape = PASS_SCHEMAS[pass as keyof typeof PASS_SCHEMAS].shape;
    const got = Object.keys(shape)
      .filter((k) => !STAGE_KEYS.includes(k))
      .map((k) => {
        const d = recipeDefault(pass as keyof typeof PASS_SCHEMAS, k);
        return k + (d === 'required' ? ' (required)' : d === undefined ? '' : `=${JSON.stringify(d)}`);
      });
    assert.deepEqual(missing(got, expected), [], `${pass}: dropped or changed (now: ${got.join(' ')})`);
  }
});
