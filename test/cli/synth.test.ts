// `llmopt synth --arch`: tiny Qwen2 / Qwen3 / Gemma 3 checkpoints that inspect names by architecture, with the
// tensors and config keys the published models have, and that export and generate; named shapes refuse shape flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parameterCount } from '../../src/core/spec.js';
import { specFromConfig } from '../../src/model/architectures/index.js';
import { syntheticConfigJson } from '../../src/model/synthetic.js';
import { NAMED_SHAPES, synthSpec, type NamedShape } from '../../src/model/synthetic-shapes.js';
import { runCli, tempDir } from '../support.js';

const TINY = ['--hidden', '64', '--layers', '2', '--heads', '2', '--kv-heads', '1', '--vocab', '512'];

function ok(args: string[]): string {
  const r = runCli(args);
  assert.equal(r.code, 0, `llmopt ${args.join(' ')}\n${r.stderr}`);
  return r.stdout;
}

function tensorNames(dir: string): string[] {
  const bytes = readFileSync(join(dir, 'model.safetensors'));
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8'));
  return Object.keys(header).filter((k) => k !== '__metadata__');
}

const CASES = [
  {
    arch: 'qwen2',
    modelType: 'qwen2',
    extra: [],
    has: ['model.layers.1.self_attn.k_proj.bias'],
    lacks: ['self_attn.o_proj.bias', 'q_norm'],
  },
  { arch: 'qwen3', modelType: 'qwen3', extra: [], has: ['model.layers.1.self_attn.q_norm.weight'], lacks: ['.bias', 'feedforward'] },
  {
    arch: 'gemma3',
    modelType: 'gemma3_text',
    // Six layers with a window of 4 under a longer prompt: five sliding layers and one global, the window exercised.
    extra: ['--layers', '6', '--tied', '--sliding-window', '4'],
    has: ['model.layers.5.pre_feedforward_layernorm.weight', 'model.layers.5.self_attn.k_norm.weight'],
    lacks: ['lm_head', '.bias'],
  },
] as const;

for (const c of CASES) {
  test(`synth --arch ${c.arch}: inspect names it ${c.arch}; it exports and generates`, () => {
    const dir = tempDir();
    const model = join(dir, c.arch);
    const synthOut = ok(['synth', '--arch', c.arch, ...TINY, ...c.extra, '-o', model]);
    assert.match(synthOut, new RegExp(`architecture\\s+${c.arch}`));
    const config = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8'));
    assert.equal(config.model_type, c.modelType);
    const names = tensorNames(model);
    for (const n of c.has) assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
    for (const n of c.lacks) assert.ok(!names.some((x) => x.includes(n)), `no ${n} in ${names.join(', ')}`);
    if (c.arch === 'gemma3') {
      assert.deepEqual(config.layer_types, [...Array(5).fill('sliding_attention'), 'full_attention']);
      assert.equal(config.sliding_window, 4);
      assert.equal(config.hidden_activation, 'gelu_pytorch_tanh');
      assert.equal(config.tie_word_embeddings, true);
    }

    const inspected = JSON.parse(ok(['inspect', model, '--json']));
    assert.equal(inspected.architecture.name, c.arch);
    assert.equal(inspected.architecture.layers, c.arch === 'gemma3' ? 6 : 2);

    const artifact = join(dir, `${c.arch}-onnx`);
    ok(['export', model, '-o', artifact]);
    const generated = JSON.parse(
      ok(['generate', artifact, '--prompt', 'the quick brown cat sat on the mat', '--max-new-tokens', '6', '--json']),
    );
    assert.equal(generated.generatedTokens, 6);
    assert.equal(generated.outputs[0].stopReason, 'length');
  });
}

test('synth --arch qwen3-0.6b and gemma-3-270m have the published models parameter counts and configs', () => {
  const published: Record<NamedShape, number> = { 'qwen3-0.6b': 596_049_920, 'gemma-3-270m': 268_098_176 };
  for (const [name, count] of Object.entries(published) as Array<[NamedShape, number]>) {
    const knobs = { hidden: 768, layers: 12, heads: 12, kvHeads: 4, vocab: 32000, dtype: 'float32' as const, tied: false };
    const { spec } = synthSpec(name, { ...knobs, context: NAMED_SHAPES[name].context });
    const json = syntheticConfigJson(spec);
    const decoder = specFromConfig(json, `${name}/config.json`);
    assert.equal(decoder.architecture, NAMED_SHAPES[name].architecture);
    assert.equal(parameterCount(decoder), count, name);
    assert.equal(decoder.tiedEmbeddings, true);
  }
  const gemma = syntheticConfigJson(
    synthSpec('gemma-3-270m', { hidden: 1, layers: 1, heads: 1, kvHeads: 1, vocab: 1, context: 32768, dtype: 'float32', tied: false }).spec,
  );
  assert.equal((gemma.layer_types as string[]).filter((t) => t === 'full_attention').length, 3);
  assert.deepEqual(
    [gemma.model_type, gemma.head_dim, gemma.sliding_window, gemma.query_pre_attn_scalar, gemma.rope_local_base_freq, gemma.rope_theta],
    ['gemma3_text', 256, 512, 256, 10000, 1000000],
  );
});

test('a named shape refuses the flags that would change it, in one line', () => {
  const r = runCli(['synth', '--arch', 'qwen3-0.6b', '--hidden', '64', '--tied', '-o', join(tempDir(), 'x')]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr.trim(), 'llmopt: --arch qwen3-0.6b is a fixed shape; for other values of --hidden, --tied use --arch qwen3');
  const w = runCli(['synth', '--arch', 'qwen3', '--sliding-window', '8', '-o', join(tempDir(), 'x')]);
  assert.equal(w.code, 2, w.stderr);
  assert.match(w.stderr, /--sliding-window: only gemma3/);
});

test('synth --arch llama is the default: the same folder, name and options as without --arch', () => {
  const dir = tempDir();
  const args = ['--hidden', '32', '--layers', '1', '--heads', '2', '--kv-heads', '1', '--vocab', '320'];
  ok(['synth', ...args, '-o', join(dir, 'a')]);
  ok(['synth', '--arch', 'llama', ...args, '-o', join(dir, 'b')]);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json'])
    assert.ok(readFileSync(join(dir, 'a', f)).equals(readFileSync(join(dir, 'b', f))), f);
  const options = (d: string) => JSON.parse(readFileSync(join(dir, d, 'llmopt.json'), 'utf8')).passes[0].options;
  assert.deepEqual(options('b'), options('a'));
  assert.equal(options('a').name, 'synth-h32-l1-a2-kv1-f256-v320');
  assert.equal(JSON.parse(readFileSync(join(dir, 'a', 'config.json'), 'utf8')).model_type, 'llama');
});
