// Distill, compressed-tensors, a shipped recipe and bench on the tiny Qwen2 / Qwen3 / Gemma 3 checkpoints in ../shared/models,
// through the built CLI: each command succeeds and its output keeps the architecture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DREAMS_EVAL, SHARED, needsSharedModel, runCli, sharedModel, tempDir } from '../support.js';
import { gemma3MultimodalCheckpoint } from '../model/gemma3-multimodal.js';

const QWEN2 = sharedModel('qwen2-tiny');
const QWEN3 = sharedModel('qwen3-tiny');
const GEMMA3 = sharedModel('gemma3-tiny');
const TRAIN = join(SHARED, 'data', 'dreams-train.txt');

function ok(args: string[]): string {
  const r = runCli(args);
  assert.equal(r.code, 0, `llmopt ${args.join(' ')}\n${r.stderr}`);
  return r.stdout;
}

/** The JSON header of a safetensors file: tensor name -> dtype and shape (offsets dropped). */
function safetensorsHeader(file: string): Record<string, { dtype: string; shape: number[] }> {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  delete header.__metadata__;
  for (const t of Object.values(header) as Array<{ data_offsets?: unknown }>) delete t.data_offsets;
  return header;
}

test('qwen3-tiny: distill a 2-layer student; it exports and evaluates', { skip: needsSharedModel('qwen3-tiny') }, () => {
  const dir = tempDir();
  const student = join(dir, 'student');
  ok([
    'distill',
    '--teacher',
    QWEN3,
    '--student-layers',
    '2',
    '--data',
    TRAIN,
    '--steps',
    '20',
    '--batch',
    '4',
    '--seq-len',
    '32',
    '-o',
    student,
    '-q',
  ]);
  const config = JSON.parse(readFileSync(join(student, 'config.json'), 'utf8'));
  assert.equal(config.model_type, 'qwen3');
  assert.equal(config.num_hidden_layers, 2);
  const names = Object.keys(safetensorsHeader(join(student, 'model.safetensors')));
  assert.ok(
    names.includes('model.layers.1.self_attn.q_norm.weight') && !names.some((n) => n.startsWith('model.layers.2.')),
    names.join(' '),
  );
  const log = readFileSync(join(student, 'train-log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(log.length, 20);
  assert.ok(log.every((s) => Number.isFinite(s.loss)));
  assert.ok(log.at(-1).kl < log[0].kl, `KL ${log[0].kl} -> ${log.at(-1).kl}`);
  ok(['export', student, '-o', join(dir, 'onnx'), '-q']);
  const r = JSON.parse(
    ok(['eval', join(dir, 'onnx'), '--data', DREAMS_EVAL, '--reference', QWEN3, '--limit', '4', '--threads', '2', '--json']),
  );
  assert.ok(Number.isFinite(r.reference.kl) && r.reference.kl > 0, JSON.stringify(r.reference));
});

test('qwen2-tiny: --format compressed-tensors keeps the tensor names, float q/k/v biases and config.json', {
  skip: needsSharedModel('qwen2-tiny'),
}, () => {
  const out = join(tempDir(), 'w4');
  // down_proj's 200 inputs divide by no block size vLLM takes: it stays float (quantization_config.ignore).
  ok(['quantize', QWEN2, '--to', 'int4', '--format', 'compressed-tensors', '--exclude', '*down_proj', '-o', out, '-q']);
  const header = safetensorsHeader(join(out, 'model.safetensors'));
  const source = safetensorsHeader(join(QWEN2, 'model.safetensors'));
  for (let l = 0; l < 3; l++) {
    const p = `model.layers.${l}.self_attn`;
    for (const proj of ['q', 'k', 'v'])
      assert.deepEqual(header[`${p}.${proj}_proj.bias`], source[`${p}.${proj}_proj.bias`], `${p}.${proj}_proj.bias`);
    assert.equal(header[`${p}.o_proj.bias`], undefined);
    for (const proj of ['q', 'k', 'v', 'o']) {
      assert.equal(header[`${p}.${proj}_proj.weight_packed`]?.dtype, 'I32', `${p}.${proj}_proj.weight_packed`);
      assert.equal(header[`${p}.${proj}_proj.weight`], undefined);
    }
    assert.deepEqual(header[`model.layers.${l}.mlp.down_proj.weight`], source[`model.layers.${l}.mlp.down_proj.weight`]);
  }
  for (const name of ['model.embed_tokens.weight', 'model.norm.weight', 'model.layers.0.input_layernorm.weight'])
    assert.deepEqual(header[name], source[name], name);
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  const sourceConfig = JSON.parse(readFileSync(join(QWEN2, 'config.json'), 'utf8'));
  const { quantization_config: qc, ...rest } = config;
  assert.deepEqual(Object.keys(rest).sort(), Object.keys(sourceConfig).sort());
  assert.equal(rest.model_type, 'qwen2');
  assert.deepEqual(rest.architectures, ['Qwen2ForCausalLM']);
  assert.equal(rest.use_sliding_window, false);
  assert.equal(qc.quant_method, 'compressed-tensors');
  assert.deepEqual(
    qc.ignore,
    [0, 1, 2].map((l) => `model.layers.${l}.mlp.down_proj`),
  );
  // llmopt reads it back as qwen2, biases included.
  ok(['export', out, '-o', join(tempDir(), 'onnx'), '-q']);
});

test('gemma3-tiny: distill a 2-layer student of a sliding and the global layer; it exports and evaluates', {
  skip: needsSharedModel('gemma3-tiny'),
}, () => {
  const dir = tempDir();
  const student = join(dir, 'student');
  const args = ['--student-layers', '2', '--data', TRAIN, '--steps', '10', '--batch', '4', '--seq-len', '32'];
  ok(['distill', '--teacher', GEMMA3, ...args, '-o', student, '-q']);
  const config = JSON.parse(readFileSync(join(student, 'config.json'), 'utf8'));
  assert.equal(config.model_type, 'gemma3_text');
  assert.equal(config.num_hidden_layers, 2);
  // Layers 0 and 5 of the teacher: layer_types follows them, or the student would not load (6 entries for 2 layers).
  assert.deepEqual(config.layer_types, ['sliding_attention', 'full_attention']);
  const names = Object.keys(safetensorsHeader(join(student, 'model.safetensors')));
  for (const n of ['pre_feedforward_layernorm', 'post_feedforward_layernorm', 'self_attn.q_norm'])
    assert.ok(names.includes(`model.layers.1.${n}.weight`), n);
  const log = readFileSync(join(student, 'train-log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(log.length, 10);
  assert.ok(log.every((s) => Number.isFinite(s.loss)));
  ok(['export', student, '-o', join(dir, 'onnx'), '-q']);
  const r = JSON.parse(
    ok(['eval', join(dir, 'onnx'), '--data', DREAMS_EVAL, '--reference', GEMMA3, '--limit', '4', '--threads', '2', '--json']),
  );
  console.log(
    `# gemma3-tiny 2-layer student after 10 steps: KL ${r.reference.kl} against the teacher, train KL ${log[0].kl} -> ${log.at(-1).kl}`,
  );
  assert.ok(Number.isFinite(r.reference.kl) && r.reference.kl > 0, JSON.stringify(r.reference));
});

test('Gemma3ForConditionalGeneration teacher: a shallow student is saved as its text model (gemma3_text) and exports', {
  skip: needsSharedModel('gemma3-tiny'),
}, async () => {
  const teacher = await gemma3MultimodalCheckpoint();
  const student = join(tempDir(), 'student');
  const args = ['--student-layers', '2', '--data', TRAIN, '--steps', '2', '--batch', '2', '--seq-len', '16'];
  ok(['distill', '--teacher', teacher, ...args, '-o', student, '-q']);
  const config = JSON.parse(readFileSync(join(student, 'config.json'), 'utf8'));
  assert.deepEqual([config.model_type, config.architectures, config.num_hidden_layers], ['gemma3_text', ['Gemma3ForCausalLM'], 2]);
  assert.equal(config.text_config, undefined);
  assert.deepEqual(config.layer_types, ['sliding_attention', 'full_attention']);
  assert.ok(Object.keys(safetensorsHeader(join(student, 'model.safetensors'))).includes('model.layers.1.self_attn.q_norm.weight'));
  ok(['export', student, '-o', join(tempDir(), 'onnx'), '-q']);
});

test('gemma3-tiny: --format compressed-tensors keeps the tensor names, its four norms, q/k norms and config.json', {
  skip: needsSharedModel('gemma3-tiny'),
}, () => {
  const out = join(tempDir(), 'w4');
  // down_proj's 144 inputs divide by no block size of 32: it stays float (quantization_config.ignore).
  ok(['quantize', GEMMA3, '--to', 'int4', '--format', 'compressed-tensors', '--exclude', '*down_proj', '-o', out, '-q']);
  const header = safetensorsHeader(join(out, 'model.safetensors'));
  const source = safetensorsHeader(join(GEMMA3, 'model.safetensors'));
  const linear = /\.(self_attn\.[qkvo]_proj|mlp\.(gate|up)_proj)\.weight$/;
  for (const [name, t] of Object.entries(source)) {
    if (linear.test(name)) {
      assert.equal(header[name], undefined, name);
      assert.equal(header[name.replace(/weight$/, 'weight_packed')]?.dtype, 'I32', name);
    } else {
      // Embeddings, norms (input, post-attention, pre- and post-feedforward, q/k) and the excluded down_proj: as stored.
      assert.deepEqual(header[name], t, name);
    }
  }
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  const sourceConfig = JSON.parse(readFileSync(join(GEMMA3, 'config.json'), 'utf8'));
  const { quantization_config: qc, ...rest } = config;
  assert.deepEqual(rest, sourceConfig);
  assert.equal(qc.quant_method, 'compressed-tensors');
  assert.deepEqual(
    qc.ignore,
    [0, 1, 2, 3, 4, 5].map((l) => `model.layers.${l}.mlp.down_proj`),
  );
  // llmopt reads it back as gemma3_text.
  ok(['export', out, '-o', join(tempDir(), 'onnx'), '-q']);
});

test('qwen3-tiny: the shipped int4-gptq recipe runs', { skip: needsSharedModel('qwen3-tiny') }, () => {
  const out = join(tempDir(), 'run');
  const small = ['quantize.calib_samples=16', 'eval.limit=8', 'bench.batch=[1]', 'bench.prompt_len=8', 'bench.gen_len=8', 'bench.reps=1'];
  ok(['run', 'int4-gptq', QWEN3, '-o', out, '-q', '--set', `data=${TRAIN}`, ...small.flatMap((s) => ['--set', s])]);
  const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
  assert.deepEqual(
    report.stages.map((s: { status: string }) => s.status),
    ['ran', 'ran', 'ran'],
  );
  assert.equal(report.failedGate, null);
});

test('qwen3-tiny: bench runs an export', { skip: needsSharedModel('qwen3-tiny') }, () => {
  const artifact = join(tempDir(), 'onnx');
  ok(['export', QWEN3, '-o', artifact, '-q']);
  const out = ok(['bench', artifact, '--batch', '1', '--prompt-len', '8', '--gen-len', '8', '--reps', '1', '--threads', '2']);
  assert.match(out, /3 layers, hidden 64, vocab 512/);
});
