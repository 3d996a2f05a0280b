// llmopt's GGUF files checked by llama.cpp itself, for aidreams-260k and every ../shared/models/*-tiny:
// - F32: metadata and tensor bytes equal llama.cpp's converter's file (general.name aside: both name the file after a
//   folder, and the tiny files were converted from other folder names); llama.cpp's greedy continuation of the reference
//   prompt equals llmopt's ONNX artifact's and the reference's.
// - F16: llama.cpp's greedy ids equal llmopt's runtime on the file's weights (widened back to float32).
// - Q8_0, Q4_0, Q4_K_M (round-to-nearest): the whole file equals llama-quantize's from llmopt's F32 file (metadata and
//   every tensor's bytes; tensors llmopt falls back to F16 are given llama-quantize as --tensor-type overrides); llama.cpp
//   loads it without tokenizer warnings, and along llama.cpp's greedy path its logits stay within a tolerance of llmopt's
//   runtime on the dequantized weights. The ids themselves are compared only up to the first step whose top-2 margin is
//   under twice that tolerance: llama.cpp's CPU kernels quantize the activations too (Q8_0/Q8_K blocks), which moves
//   these random-weight models' logits by up to ~0.14 where their margins are often 1e-3.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { readGgufHeader } from '../../src/formats/gguf/file.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { exportGguf } from '../../src/passes/export/gguf.js';
import { quantizeGguf } from '../../src/passes/quantize/gguf.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { ORACLE_CHECKPOINTS, writeOracleCheckpoint } from '../model/llamacpp-checkpoints.js';
import { NEEDS_SHARED, aidreamsReference, needsSharedModel, sharedModel, tempDir, tinyReference } from '../support.js';
import {
  CONVERT,
  LLAMACPP,
  PYTHON,
  converterSkip,
  ggufAsHfFolder,
  ggufDifferences,
  llamacppGreedy,
  llamacppSkip,
  llmoptGreedy,
  tokenizerWarnings,
} from './gguf-support.js';

const run = promisify(execFile);
// aidreams last: its converter run (python, torch) starts with the file and overlaps the other models' tests.
const MODELS = ['qwen2-tiny', 'qwen3-tiny', 'gemma3-tiny', 'phi3-tiny', 'smollm3-tiny', 'aidreams-260k'];
const STEPS = 16;
/** Max |logit difference| from llama.cpp along its greedy path, per type (observed: F16 4.7e-3, Q8_0 0.10, Q4 0.14). */
const TOLERANCE = { q8_0: 0.15, q4_0: 0.25, q4_k_m: 0.25 } as const;

function reference(name: string): { prompt: number[]; ids: number[] } {
  const r = name === 'aidreams-260k' ? aidreamsReference().greedy_from_prompt : tinyReference(name).greedy_from_prompt;
  return { prompt: r.prompt_ids, ids: r.ids.slice(0, STEPS) };
}

const nCtxOf = (source: string) => Math.min(128, readModelSpec(source).maxPositions);

/** Checkpoints of llamacpp-checkpoints.ts whose F32 files are compared too: Gemma 2, Llama 3.2 rope_freqs, Phi-3 longrope. */
const ORACLE = ORACLE_CHECKPOINTS.filter((c) => ['gemma2-tiny', 'llama32-tiny', 'phi3-longrope-long'].includes(c.name));

interface Converted {
  /** Hugging Face folder and the converter's F32 file, by name. */
  files: Map<string, { source: string; gguf: string }>;
}

/**
 * llama.cpp's converter over aidreams-260k and the oracle checkpoints, in one python process (torch imported once),
 * started when the file loads so that it overlaps the other tests. aidreams' SentencePiece-style tokenizer goes through
 * transformers, which convert_wrap.py stubs only for byte-level BPE: its copy takes qwen3-tiny's tokenizer (512 tokens
 * too), which checks every tensor and hyperparameter.
 */
async function convert(): Promise<Converted | string> {
  const skip = converterSkip() ?? needsSharedModel('qwen3-tiny');
  if (skip) return skip;
  const dir = tempDir('llmopt-gguf-convert-');
  const files = new Map<string, { source: string; gguf: string }>();
  const aidreams = join(dir, 'aidreams-borrowed-tokenizer');
  mkdirSync(aidreams);
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors'])
    copyFileSync(join(sharedModel('aidreams-260k'), f), join(aidreams, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'])
    copyFileSync(join(sharedModel('qwen3-tiny'), f), join(aidreams, f));
  files.set('aidreams-260k', { source: aidreams, gguf: join(dir, 'aidreams-f32.gguf') });
  for (const c of ORACLE) {
    const source = join(dir, c.name);
    mkdirSync(source);
    await writeOracleCheckpoint(c, source, sharedModel('qwen3-tiny'));
    files.set(c.name, { source, gguf: join(dir, `${c.name}-f32.gguf`) });
  }
  const jobs = JSON.stringify([...files.values()].map((f) => [f.source, f.gguf]));
  const script = [
    'import json, runpy, sys',
    `for src, out in json.loads(${JSON.stringify(jobs)}):`,
    `    sys.argv = [${JSON.stringify(CONVERT)}, src, '--outtype', 'f32', '--outfile', out]`,
    '    try:',
    `        runpy.run_path(${JSON.stringify(CONVERT)}, run_name='__main__')`,
    '    except SystemExit as e:',
    '        if e.code: raise',
  ].join('\n');
  await run(PYTHON, ['-c', script], { maxBuffer: 64 << 20 });
  return { files };
}

let converted: Promise<Converted | string> | null = null;
const conversions = () => (converted ??= convert());

/** llama.cpp's converter's F32 file of a model: the shipped one, or one converted here. */
async function converterFile(name: string): Promise<{ path: string; tokenizer: boolean } | string> {
  if (name !== 'aidreams-260k') return { path: join(sharedModel(name), `${name}-f32.gguf`), tokenizer: true };
  const c = await conversions();
  return typeof c === 'string' ? c : { path: c.files.get(name)!.gguf, tokenizer: false };
}

if (!llamacppSkip() && !needsSharedModel('aidreams-260k')) void conversions();

for (const name of MODELS) {
  const skip = llamacppSkip() ?? needsSharedModel(name);
  const source = sharedModel(name);

  test(`${name} f32: llama.cpp's converter's file, and llama.cpp's greedy ids are llmopt's`, { skip, timeout: 120_000 }, async (t) => {
    const dir = tempDir('llmopt-gguf-');
    const gguf = join(dir, 'f32.gguf');
    await exportGguf(source, gguf, { dtype: 'f32' });
    const theirs = await converterFile(name);
    if (typeof theirs === 'string') t.diagnostic(theirs);
    else {
      const ignore = (k: string) => k === 'general.name' || (!theirs.tokenizer && k.startsWith('tokenizer.'));
      const diff = await ggufDifferences(readGgufHeader(gguf), readGgufHeader(theirs.path), ignore);
      assert.deepEqual(diff, { metadata: [], tensors: [] }, "differences from llama.cpp's converter's F32 file");
    }
    const { prompt, ids } = reference(name);
    const dump = await llamacppGreedy(gguf, prompt, STEPS, nCtxOf(source), join(dir, 'dump.json'));
    assert.deepEqual(tokenizerWarnings(dump.log), [], 'no tokenizer warnings from llama.cpp');
    const ours = await llmoptGreedy(source, join(dir, 'onnx'), prompt, STEPS);
    assert.deepEqual(dump.greedy_ids, ours, "llama.cpp's greedy ids vs llmopt's ONNX artifact's");
    assert.deepEqual(ours, ids, "the reference's greedy ids");
  });

  test(`${name} f16: llama.cpp's greedy ids are llmopt's on the same weights`, { skip, timeout: 120_000 }, async () => {
    const dir = tempDir('llmopt-gguf-');
    const gguf = join(dir, 'f16.gguf');
    await exportGguf(source, gguf, { dtype: 'f16' });
    const { prompt } = reference(name);
    const dump = await llamacppGreedy(gguf, prompt, STEPS, nCtxOf(source), join(dir, 'dump.json'));
    assert.deepEqual(tokenizerWarnings(dump.log), [], 'no tokenizer warnings from llama.cpp');
    const ours = await llmoptGreedy(await ggufAsHfFolder(gguf, source, join(dir, 'hf')), join(dir, 'onnx'), prompt, STEPS);
    assert.deepEqual(dump.greedy_ids, ours, "llama.cpp's greedy ids vs llmopt's on the F16 weights");
  });

  for (const type of ['q8_0', 'q4_0', 'q4_k_m'] as const) {
    test(`${name} ${type}: llama-quantize's file, run by llama.cpp as llmopt runs its weights`, { skip, timeout: 120_000 }, async (t) => {
      const dir = tempDir('llmopt-gguf-');
      const gguf = join(dir, `${type}.gguf`);
      const report = await quantizeGguf(source, gguf, { to: type, method: 'rtn', exclude: [], quantizeEmbeddings: false, fallback: true });
      // llama-quantize from llmopt's F32 file, told the F16 fallbacks it would refuse to choose itself.
      const f32 = join(dir, 'f32.gguf');
      await exportGguf(source, f32, { dtype: 'f32' });
      const overrides = report.fallbacks
        .filter((f) => / -> F16 \(rows/.test(f))
        .flatMap((f) => ['--tensor-type', `${f.split(':')[0]}=f16`]);
      const theirs = join(dir, 'llama-quantize.gguf');
      await run(join(LLAMACPP, 'bin', 'llama-quantize'), [...overrides, f32, theirs, type.toUpperCase()], { maxBuffer: 64 << 20 });
      const diff = await ggufDifferences(readGgufHeader(gguf), readGgufHeader(theirs));
      assert.deepEqual(diff, { metadata: [], tensors: [] }, `differences from llama-quantize ${type.toUpperCase()}`);

      const { prompt } = reference(name);
      const dump = await llamacppGreedy(gguf, prompt, STEPS, nCtxOf(source), join(dir, 'dump.json'));
      assert.deepEqual(tokenizerWarnings(dump.log), [], 'no tokenizer warnings from llama.cpp');
      const hf = await ggufAsHfFolder(gguf, source, join(dir, 'hf'));
      const ours = await llmoptGreedy(hf, join(dir, 'onnx'), prompt, STEPS);
      // Teacher-forced along llama.cpp's path: llmopt's logits at each of its steps.
      const model = await DecoderModel.open(join(dir, 'onnx'), { device: 'cpu' });
      let worst = 0;
      try {
        const seq = [...prompt, ...dump.greedy_ids];
        const logits = await model.forward(model.createCache(1, seq.length), [seq]);
        dump.greedy_step_logits.forEach((row, i) => {
          const mine = logits.at(0, prompt.length - 1 + i);
          for (let j = 0; j < row.length; j++) worst = Math.max(worst, Math.abs(mine[j]! - row[j]!));
        });
      } finally {
        await model.release();
      }
      const tol = TOLERANCE[type];
      t.diagnostic(`max |logit - llama.cpp| along its greedy path ${worst.toExponential(2)} (tolerance ${tol})`);
      assert.ok(worst < tol, `llama.cpp's logits differ from llmopt's on the dequantized weights by ${worst}`);
      const sure = dump.greedy_top2_margin.findIndex((m) => m < 2 * tol);
      const n = sure === -1 ? STEPS : sure;
      assert.deepEqual(ours.slice(0, n), dump.greedy_ids.slice(0, n), `greedy ids before the first top-2 margin under ${2 * tol}`);
    });
  }
}

for (const c of ORACLE) {
  test(`${c.name} f32 (llamacpp-checkpoints.ts): llama.cpp's converter's file`, {
    skip: llamacppSkip() ?? NEEDS_SHARED,
    timeout: 120_000,
  }, async (t) => {
    const conv = await conversions();
    if (typeof conv === 'string') return t.skip(conv);
    const { source, gguf } = conv.files.get(c.name)!;
    const ours = join(tempDir('llmopt-gguf-'), 'f32.gguf');
    await exportGguf(source, ours, { dtype: 'f32' });
    // general.name: the converter names a phi3 file "Phi3 ..." (after the folder), which llama.cpp then fails to load.
    const diff = await ggufDifferences(readGgufHeader(ours), readGgufHeader(gguf), (k) => k === 'general.name');
    assert.deepEqual(diff, { metadata: [], tensors: [] }, "differences from llama.cpp's converter's F32 file");
  });
}
