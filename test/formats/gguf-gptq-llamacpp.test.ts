// quantize --format gguf --method gptq checked by llama.cpp: on aidreams-260k (llama: q/k rows permuted after GPTQ) and
// phi3-tiny (q/k/v and gate/up fused after GPTQ), llama.cpp runs the file within the RTN tolerance of llmopt's runtime on
// its dequantized weights (codes moved with their rows as the layout moves them), GPTQ changed the calibrated tensors,
// and on aidreams llama-perplexity's mean KL against the F32 file is lower than round-to-nearest's, and llmopt eval's KL
// on llama-perplexity's chunks of the same weights agrees with it within 10%.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { readGgufHeader } from '../../src/formats/gguf/file.js';
import { exportGguf } from '../../src/passes/export/gguf.js';
import { quantizeGguf } from '../../src/passes/quantize/gguf.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { compareModels } from '../../src/eval/compare.js';
import { DREAMS_EVAL, DREAMS_TRAIN, aidreamsReference, needsSharedModel, sharedModel, tempDir, tinyReference } from '../support.js';
import { LLAMACPP, ggufAsHfFolder, ggufDifferences, llamacppGreedy, llamacppSkip, llmoptGreedy } from './gguf-support.js';

const run = promisify(execFile);
const PERPLEXITY = join(LLAMACPP, 'bin', 'llama-perplexity');

/**
 * llama-perplexity's mean KL divergence of `gguf` against the base logits file. Its report is written by llama.cpp's
 * asynchronous logger, which sometimes exits before the last lines (the summary) are out: up to four tries.
 */
async function meanKl(gguf: string, base: string, dir: string): Promise<number> {
  const args = ['-m', gguf, '-f', DREAMS_EVAL, '-c', '128', '-t', '2', '--kl-divergence-base', base, '--kl-divergence'];
  for (let attempt = 0; attempt < 4; attempt++) {
    const out = join(dir, `kl-${attempt}.txt`);
    await run('/bin/sh', ['-c', '"$0" "$@" > "$OUT" 2>/dev/null', PERPLEXITY, ...args], { env: { ...process.env, OUT: out } });
    const m = /Mean\s+KLD:\s+([0-9.eE+-]+)/.exec(readFileSync(out, 'utf8'));
    if (m) return Number(m[1]);
  }
  throw new Error(`llama-perplexity printed no mean KLD for ${gguf} in four runs`);
}

for (const name of ['aidreams-260k', 'phi3-tiny']) {
  test(`${name} q4_k_m --method gptq: llama.cpp runs the calibrated codes as llmopt does`, {
    skip: llamacppSkip() ?? needsSharedModel(name),
  }, async (t) => {
    const source = sharedModel(name);
    const dir = tempDir('llmopt-gguf-gptq-');
    const gptq = join(dir, 'gptq.gguf');
    const rtn = join(dir, 'rtn.gguf');
    const common = { to: 'q4_k_m' as const, exclude: [], quantizeEmbeddings: false, fallback: true };
    const report = await quantizeGguf(source, gptq, { ...common, method: 'gptq', calib: DREAMS_TRAIN, calibSamples: 32 });
    await quantizeGguf(source, rtn, { ...common, method: 'rtn' });
    assert.ok(report.gptqLayers > 0 && report.calibrationTokens > 0);
    const diff = await ggufDifferences(readGgufHeader(gptq), readGgufHeader(rtn));
    assert.deepEqual(diff.metadata, [], 'same metadata as round-to-nearest');
    assert.ok(
      diff.tensors.some((n) => /attn_(q|qkv)\.weight$/.test(n)),
      'GPTQ changed the attention codes',
    );
    assert.ok(!diff.tensors.includes('token_embd.weight'), 'the embedding rounds to nearest');

    const r = name === 'aidreams-260k' ? aidreamsReference().greedy_from_prompt : tinyReference(name).greedy_from_prompt;
    const dump = await llamacppGreedy(gptq, r.prompt_ids, 16, 128, join(dir, 'dump.json'));
    const hf = await ggufAsHfFolder(gptq, source, join(dir, 'hf'));
    await llmoptGreedy(hf, join(dir, 'onnx'), r.prompt_ids, 1);
    const model = await DecoderModel.open(join(dir, 'onnx'), { device: 'cpu' });
    let worst = 0;
    try {
      const seq = [...r.prompt_ids, ...dump.greedy_ids];
      const logits = await model.forward(model.createCache(1, seq.length), [seq]);
      dump.greedy_step_logits.forEach((row, i) => {
        const mine = logits.at(0, r.prompt_ids.length - 1 + i);
        for (let j = 0; j < row.length; j++) worst = Math.max(worst, Math.abs(mine[j]! - row[j]!));
      });
    } finally {
      await model.release();
    }
    t.diagnostic(`max |logit - llama.cpp| along its greedy path ${worst.toExponential(2)}`);
    assert.ok(worst < 0.25, `llama.cpp's logits differ from llmopt's on the dequantized GPTQ weights by ${worst}`);

    if (name === 'aidreams-260k') {
      const f32 = join(dir, 'f32.gguf');
      await exportGguf(source, f32, { dtype: 'f32' });
      const base = join(dir, 'base.kld');
      await run(PERPLEXITY, ['-m', f32, '-f', DREAMS_EVAL, '-c', '128', '-t', '2', '--kl-divergence-base', base], { maxBuffer: 64 << 20 });
      const [klGptq, klRtn] = [await meanKl(gptq, base, dir), await meanKl(rtn, base, dir)];
      t.diagnostic(`llama-perplexity mean KL vs F32 on dreams-eval: GPTQ ${klGptq}, round-to-nearest ${klRtn}`);
      assert.ok(klGptq < klRtn, `GPTQ's mean KL ${klGptq} is not below round-to-nearest's ${klRtn}`);
      // llmopt eval on llama-perplexity's own chunks (--chunks 128) of the same dequantized weights agrees with it.
      const ours = await compareModels(join(dir, 'onnx'), source, DREAMS_EVAL, { chunks: 128 });
      t.diagnostic(`llmopt eval --chunks 128 KL ${ours.reference!.kl} over ${ours.tokens} tokens (llama-perplexity ${klGptq})`);
      assert.ok(Math.abs(ours.reference!.kl - klGptq) <= 0.1 * klGptq, `llmopt ${ours.reference!.kl} vs llama.cpp ${klGptq}`);
    }
  });
}
