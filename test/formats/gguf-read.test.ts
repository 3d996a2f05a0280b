// GGUF files as a model source: llama.cpp's converter's files of ../shared/models/*-tiny read back as the model they
// were converted from (same logits, same tokenizer ids), aidreams-260k's SentencePiece-style tokenizer survives the
// trip through GGUF metadata, and every command that reads a model takes a GGUF file.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { Tokenizer } from '@huggingface/tokenizers';
import { readGgufHeader, writeGguf } from '../../src/formats/gguf/file.js';
import { ggufTokenizer } from '../../src/formats/gguf/tokenizer.js';
import { tokenizerFilesOf } from '../../src/formats/gguf/tokenizer-json.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { ggufCompanionFolder, readGgufModel } from '../../src/model/gguf-model.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { exportModel } from '../../src/passes/export.js';
import { exportGguf } from '../../src/passes/export/gguf.js';
import { quantizeGguf, type GgufTarget } from '../../src/passes/quantize/gguf.js';
import { ggufAsHfFolder } from './gguf-support.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import {
  AIDREAMS,
  DREAMS_EVAL,
  DREAMS_TRAIN,
  NEEDS_SHARED,
  SHARED,
  TINY_MODELS,
  aidreamsReference,
  exportedArtifact,
  needsSharedModel,
  runCli,
  sharedModel,
  tempDir,
  tinyReference,
} from '../support.js';

const MODELS = [...TINY_MODELS, 'gemma3-tiny'];
const ggufOf = (name: string) => join(sharedModel(name), `${name}-f32.gguf`);
const lines = () => readFileSync(DREAMS_EVAL, 'utf8').split('\n').filter(Boolean);

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

for (const name of MODELS) {
  test(`${name}: llama.cpp's F32 GGUF reads as the checkpoint: same spec, same logits, same tokenizer ids`, {
    skip: needsSharedModel(name),
  }, async () => {
    const model = await readGgufModel(ggufOf(name));
    const hf = readModelSpec(sharedModel(name));
    // The file holds float32 weights, llama.cpp's special tokens and its epsilon as a float32; the rest is the checkpoint's.
    assert.equal(model.spec.rmsNormEps, Math.fround(hf.rmsNormEps));
    const same = { weightDtype: hf.weightDtype, eosTokenIds: hf.eosTokenIds, rmsNormEps: hf.rmsNormEps };
    assert.deepEqual({ ...model.spec, ...same }, hf);
    const out = join(tempDir(), 'onnx');
    await exportModel(await ggufCompanionFolder(ggufOf(name)), out, { attention: 'fused', layout: 'llmopt' });
    const ids = tinyReference(name).logits.input_ids;
    const [a, b] = await Promise.all(
      [out, await exportedArtifact(sharedModel(name), 'fused')].map((dir) => DecoderModel.open(dir, { device: 'cpu' })),
    );
    const la = await a!.forward(a!.createCache(1, ids.length), [ids]);
    const lb = await b!.forward(b!.createCache(1, ids.length), [ids]);
    let worst = 0;
    for (let t = 0; t < ids.length; t++) worst = Math.max(worst, maxDiff(la.at(0, t), lb.at(0, t)));
    assert.ok(worst < 1e-5, `max |logit difference| ${worst}`);
    await Promise.all([a!.release(), b!.release()]);
    const ours = loadTokenizer(await ggufCompanionFolder(ggufOf(name)));
    const ref = loadTokenizer(sharedModel(name));
    for (const line of [...lines(), 'Hello  world\n\n 123456 ünïcödé 日本']) {
      const ids = ref.encode(line);
      assert.deepEqual(ours.encode(line), ids, line);
      assert.equal(ours.decode(ids), ref.decode(ids));
    }
  });
}

test("aidreams-260k's SentencePiece-style tokenizer: written as llama.cpp's `llama` metadata, rebuilt with the same ids", {
  skip: NEEDS_SHARED,
}, () => {
  const config = JSON.parse(readFileSync(join(AIDREAMS, 'config.json'), 'utf8'));
  const meta = ggufTokenizer(AIDREAMS, { vocabSize: config.vocab_size, config, spacePrefix: 'config' });
  assert.equal(meta.model, 'llama');
  const files = tokenizerFilesOf(new Map(meta.entries), 'aidreams.gguf', 128);
  const ours = new Tokenizer(files.tokenizer, files.tokenizerConfig);
  const ref = loadTokenizer(AIDREAMS);
  const texts = [...lines(), ...readFileSync(DREAMS_TRAIN, 'utf8').split('\n').filter(Boolean), 'Hello  world 123 ünïcödé 日本'];
  for (const line of texts) {
    const ids = ref.encode(line);
    assert.deepEqual(ours.encode(line).ids, ids, line);
    assert.equal(ours.decode(ids, { skip_special_tokens: true }), ref.decode(ids));
  }
  assert.deepEqual([files.bos, files.eos], [1, 2]);
});

test('inspect shows a GGUF file: architecture, ggml types, metadata; --json too', { skip: needsSharedModel('qwen3-tiny') }, () => {
  const r = runCli(['inspect', ggufOf('qwen3-tiny')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /kind\s+gguf/);
  assert.match(r.stdout, /architecture\s+qwen3: 3 layers/);
  assert.match(r.stdout, /tokenizer\.ggml\.pre\s+gpt-2/);
  const json = JSON.parse(runCli(['inspect', ggufOf('qwen3-tiny'), '--json']).stdout);
  assert.equal(json.kind, 'gguf');
  assert.equal(json.metadata['general.architecture'], 'qwen3');
  assert.ok(json.tensors.some((t: { name: string; dtype: string }) => t.name === 'blk.0.attn_q_norm.weight' && t.dtype === 'F32'));
});

test('a GGUF file is a source for export, quantize, eval --reference and distill --teacher', {
  skip: needsSharedModel('qwen2-tiny'),
}, () => {
  const dir = tempDir();
  const gguf = ggufOf('qwen2-tiny');
  const ok = (args: string[]) => {
    const r = runCli(args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  ok(['export', gguf, '-o', join(dir, 'onnx'), '-q']);
  const manifest = JSON.parse(readFileSync(join(dir, 'onnx', 'llmopt.json'), 'utf8'));
  assert.equal(manifest.source.path, gguf, 'the manifest names the GGUF file');
  ok(['quantize', gguf, '--to', 'int8', '-o', join(dir, 'int8'), '-q']);
  const r = JSON.parse(ok(['eval', join(dir, 'int8'), '--data', DREAMS_EVAL, '--reference', gguf, '--limit', '4', '--json']));
  assert.ok(r.reference.kl > 0 && r.reference.kl < 1e-3, JSON.stringify(r.reference));
  const args = ['--student-layers', '2', '--data', DREAMS_TRAIN, '--steps', '2', '--batch', '2', '--seq-len', '16'];
  ok(['distill', '--teacher', gguf, ...args, '-o', join(dir, 'student'), '-q']);
  assert.equal(JSON.parse(readFileSync(join(dir, 'student', 'config.json'), 'utf8')).model_type, 'qwen2');
});

test('bad GGUF files: one line naming the file, exit 2, nothing written', async () => {
  const dir = tempDir();
  const corrupt = join(dir, 'corrupt.gguf');
  writeFileSync(corrupt, Buffer.concat([Buffer.from('GGUF'), Buffer.from([3, 0, 0, 0]), Buffer.alloc(8, 0xff)]));
  const mamba = join(dir, 'mamba.gguf');
  await writeGguf(mamba, [['general.architecture', { type: 'string', value: 'mamba' }]], []);
  const cases: Array<[string, RegExp]> = [
    [corrupt, /corrupt\.gguf: not a valid GGUF file: tensor count \d+ is beyond any file|corrupt\.gguf: not a valid GGUF file: .*/],
    [mamba, /mamba\.gguf: GGUF architecture "mamba" is not one llmopt reads \(it reads llama, qwen2/],
  ];
  for (const [file, message] of cases) {
    for (const args of [
      ['inspect', file],
      ['export', file, '-o', join(dir, 'out')],
    ]) {
      const r = runCli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr.trim(), message);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(!existsSync(join(dir, 'out')), 'nothing written');
    }
  }
  assert.equal(readGgufHeader(mamba).tensors.length, 0);
  if (needsSharedModel('qwen2-tiny') === undefined) {
    const r = runCli(['prune', ggufOf('qwen2-tiny'), '--sparsity', '2:4', '-o', join(dir, 'out')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /qwen2-tiny-f32\.gguf: prune reads Hugging Face folders, not GGUF files/);
    assert.ok(!existsSync(join(dir, 'out')));
  }
});

const LLAMA_QUANTIZE = join(SHARED, 'tools', 'llama.cpp', 'bin', 'llama-quantize');

// The tiny checkpoints' FFN widths are no multiple of 32: llama-quantize has no Q8_0 for them, but its K-quant mixes fall
// back (Q5_0 / Q8_0 / F16), so these files hold five ggml types between them.
test("llama-quantize's Q4_K_M and Q6_K files read dequantized: export, evaluate, and requantizing warns", {
  skip: !existsSync(LLAMA_QUANTIZE) ? '../shared/tools/llama.cpp is absent' : needsSharedModel('qwen3-tiny'),
}, () => {
  const dir = tempDir();
  const kl: Record<string, number> = {};
  for (const type of ['Q6_K', 'Q4_K_M']) {
    const file = join(dir, `qwen3-${type}.gguf`);
    const q = spawnSync(LLAMA_QUANTIZE, [ggufOf('qwen3-tiny'), file, type], { encoding: 'utf8' });
    assert.equal(q.status, 0, q.stderr);
    const onnx = join(dir, `onnx-${type}`);
    assert.equal(runCli(['export', file, '-o', onnx, '-q']).code, 0);
    const r = runCli(['eval', onnx, '--data', DREAMS_EVAL, '--reference', sharedModel('qwen3-tiny'), '--limit', '4', '--json']);
    assert.equal(r.code, 0, r.stderr);
    kl[type] = JSON.parse(r.stdout).reference.kl;
  }
  console.log(`# qwen3-tiny read from llama-quantize's files, KL against float (4 documents): ${JSON.stringify(kl)}`);
  assert.ok(kl.Q6_K! > 0 && kl.Q6_K! < 0.01 && kl.Q4_K_M! > kl.Q6_K! && kl.Q4_K_M! < 0.2, JSON.stringify(kl));
  const r = runCli(['quantize', join(dir, 'qwen3-Q4_K_M.gguf'), '--to', 'int4', '-o', join(dir, 'int4'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  const warnings: string[] = JSON.parse(r.stdout).warnings;
  assert.ok(
    warnings.some((w) => /qwen3-Q4_K_M\.gguf holds gguf [A-Z0-9_/]+ weights; requantizing adds this rounding/.test(w)),
    String(warnings),
  );
});

/** Full-pass logits of an artifact on `ids`, [S, V] rows. */
async function logitsOf(artifact: string, ids: number[]): Promise<Float32Array[]> {
  const model = await DecoderModel.open(artifact, { device: 'cpu' });
  const out = await model.forward(model.createCache(1, ids.length), [ids]);
  const rows = ids.map((_, t) => Float32Array.from(out.at(0, t)));
  await model.release();
  return rows;
}

// What llmopt writes reads back as what was written: each file's export (through the reader: spec from the metadata,
// tokenizer from tokenizer.ggml.*, the inverse layouts) against an export of the weights the file holds, laid back
// out by the writer's test tool from the source's own config (ggufAsHfFolder).
const READ_BACK: Array<[string, GgufTarget[]]> = [
  ['aidreams-260k', ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k_m']],
  ['qwen3-tiny', ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k_m']],
  ['phi3-tiny', ['f16', 'q4_k_m']],
  ['gemma3-tiny', ['f16', 'q4_k_m']],
  ['qwen2-tiny', ['q4_k_m']],
  ['smollm3-tiny', ['q4_k_m']],
];
for (const [name, targets] of READ_BACK) {
  const source = name === 'aidreams-260k' ? AIDREAMS : sharedModel(name);
  test(`${name}: GGUF files llmopt writes (${targets.join(', ')}) read back to the weights written, logits within 1e-5`, {
    skip: name === 'aidreams-260k' ? NEEDS_SHARED : needsSharedModel(name),
  }, async () => {
    const ids = name === 'aidreams-260k' ? aidreamsReference().logits.input_ids : tinyReference(name).logits.input_ids;
    for (const to of targets) {
      const dir = tempDir();
      const file = join(dir, `${to}.gguf`);
      if (to === 'f32' || to === 'f16') await exportGguf(source, file, { dtype: to });
      else await quantizeGguf(source, file, { to, method: 'rtn', exclude: [], quantizeEmbeddings: false, fallback: true });
      const viaReader = join(dir, 'read');
      await exportModel(await ggufCompanionFolder(file), viaReader, { attention: 'fused', layout: 'llmopt' });
      const written = join(dir, 'written');
      await exportModel(await ggufAsHfFolder(file, source, join(dir, 'hf')), written, { attention: 'fused', layout: 'llmopt' });
      const [a, b] = [await logitsOf(viaReader, ids), await logitsOf(written, ids)];
      let worst = 0;
      a.forEach((row, t) => (worst = Math.max(worst, maxDiff(row, b[t]!))));
      console.log(`# ${name} ${to}: max |reader - written| = ${worst.toExponential(2)}`);
      assert.ok(worst <= 1e-5, `${name} ${to}: max |logit difference| ${worst}`);
    }
  });
}
