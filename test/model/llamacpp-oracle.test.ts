// llama.cpp as the oracle for the checkpoints llamacpp-checkpoints.ts writes (Gemma 2, Llama 3.x rope scaling, SmolLM2's
// heads, Mistral with a window, Phi-3 longrope, a 131,072 vocabulary): each is converted by llama.cpp's own converter,
// run by ../shared/tools/llama.cpp/bin/llama-dump-logits, and llmopt's export in every attention form must give its
// logits (max abs difference printed) and the same greedy ids. Skips when llama.cpp, /usr/bin/python3 with torch,
// sentencepiece and tqdm, or ../shared/models/qwen3-tiny's tokenizer is missing.
// Where llama.cpp departs from Hugging Face, llmopt follows Hugging Face:
// - Gemma 2's GELU: llama.cpp's CPU backend reads an fp16 table, llmopt computes the exact tanh-GELU; the two sit about
//   2.3e-3 apart, so Gemma 2's tolerance is 1e-2 (sliding-window.test.ts holds llmopt's Gemma 2 to 1e-3 against a
//   float64 forward with Hugging Face's semantics).
// - query_pre_attn_scalar: llama.cpp ignores it (scales by 1/sqrt(head_dim)), so the checkpoint sets it to head_dim.
// - Mistral's sliding window: llama.cpp's converter maps Mistral to its llama architecture, which has none, so only
//   sequences no longer than the window are compared.
// - Phi-3 longrope: llama.cpp picks the factor table per context, Hugging Face per call; compared where both pick alike.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SHARED, exportedArtifact, sharedModel, tempDir } from '../support.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { generate } from '../../src/runtime/generate.js';
import { GREEDY } from '../../src/runtime/sampling.js';
import { ORACLE_CHECKPOINTS, type OracleCheckpoint, writeOracleCheckpoint } from './llamacpp-checkpoints.js';

const LLAMACPP = join(SHARED, 'tools', 'llama.cpp');
const CONVERT = join(LLAMACPP, 'convert', 'convert_wrap.py');
const DUMP = join(LLAMACPP, 'bin', 'llama-dump-logits');
const PYTHON = '/usr/bin/python3';
const TOKENIZER = sharedModel('qwen3-tiny');

function skipReason(): string | undefined {
  if (!existsSync(CONVERT) || !existsSync(DUMP)) return `llama.cpp is absent (${LLAMACPP}): the llama.cpp oracle tests are skipped`;
  if (!existsSync(join(TOKENIZER, 'tokenizer.json')))
    return `${TOKENIZER} is absent (its tokenizer is used): llama.cpp oracle tests skipped`;
  const py = spawnSync(PYTHON, ['-c', 'import torch, sentencepiece, tqdm'], { encoding: 'utf8' });
  if (py.status !== 0)
    return `${PYTHON} cannot import torch, sentencepiece and tqdm (apt-get install -y python3-torch python3-sentencepiece python3-tqdm): skipped`;
  return undefined;
}
const SKIP = skipReason();

interface Dump {
  input_ids: number[];
  logits: number[][];
  prompt_ids: number[];
  greedy_ids: number[];
  greedy_top2_margin: number[];
}

/** Deterministic ids below the tokenizer's special tokens (509-511). */
function ids(count: number, seed: number): number[] {
  let s = seed;
  return Array.from({ length: count }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) % 509;
  });
}

const run = promisify(execFile);
interface Prepared {
  dir: string;
  dumps: Dump[];
}
const prepared = new Map<string, Promise<Prepared>>();

/** Writes, converts and runs one checkpoint through llama.cpp (once per test process). */
async function prepare(spec: OracleCheckpoint): Promise<Prepared> {
  const root = tempDir('llmopt-llamacpp-');
  const dir = join(root, spec.name);
  mkdirSync(dir);
  await writeOracleCheckpoint(spec, dir, TOKENIZER);
  const gguf = join(root, `${spec.name}-f32.gguf`);
  // A neutral general.name: llama.cpp's vocabulary loader fails (unordered_map::at) on a phi3 file named like Phi-3
  // (the converter names it after the folder, "Phi3 Longrope Tiny") whose vocabulary lacks Phi-3's own tokens.
  const name = ['--model-name', `llmopt-oracle-${ORACLE_CHECKPOINTS.indexOf(spec)}`];
  await run(PYTHON, [CONVERT, dir, ...name, '--outtype', 'f32', '--outfile', gguf], { maxBuffer: 64 << 20 });
  const dumps: Dump[] = [];
  for (const [i, r] of spec.runs.entries()) {
    const out = join(root, `dump-${i}.json`);
    const seq = ids(r.ids, 11 + i);
    const prompt = ids(r.prompt, 101 + i);
    const env = { ...process.env, LLAMA_BACKEND_DIR: join(LLAMACPP, 'bin') };
    await run(DUMP, [gguf, seq.join(','), prompt.join(','), String(r.gen), String(r.nCtx), out], { env, maxBuffer: 64 << 20 });
    dumps.push(JSON.parse(readFileSync(out, 'utf8')));
  }
  return { dir, dumps };
}

/** Starts every checkpoint's conversion at the first call, so the converters (mostly importing torch) overlap. */
function preparedFor(spec: OracleCheckpoint): Promise<Prepared> {
  if (prepared.size === 0) for (const s of ORACLE_CHECKPOINTS) prepared.set(s.name, prepare(s));
  return prepared.get(spec.name)!;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

for (const spec of ORACLE_CHECKPOINTS) {
  for (const form of ['fused', 'standard', 'inplace'] as const) {
    test(`${spec.name} ${form}: logits and greedy ids equal llama.cpp's`, { skip: SKIP, timeout: 180_000 }, async () => {
      const { dir, dumps } = await preparedFor(spec);
      const model = await DecoderModel.open(await exportedArtifact(dir, form), { device: 'cpu' });
      try {
        for (const [i, dump] of dumps.entries()) {
          const label = spec.runs[i]!.label ? ` (${spec.runs[i]!.label})` : '';
          const ids = dump.input_ids;
          const logits = await model.forward(model.createCache(1, ids.length), [ids]);
          let worst = 0;
          dump.logits.forEach((row, t) => (worst = Math.max(worst, maxDiff(logits.at(0, t), row))));
          const why = spec.note ? `; ${spec.note}` : '';
          console.log(
            `# ${spec.name} ${form}${label}: max |logit - llama.cpp| = ${worst.toExponential(3)} (tolerance ${spec.tolerance}${why})`,
          );
          assert.ok(worst < spec.tolerance, `${spec.name}${label}: max diff ${worst}`);

          const { prompt_ids: prompt, greedy_ids: greedy } = dump;
          const r = await generate(model, [prompt], { maxNewTokens: greedy.length, sampling: GREEDY, stopTokens: [] });
          const smallest = Math.min(...dump.greedy_top2_margin);
          assert.deepEqual(r.tokens[0], greedy, `${spec.name}${label}: greedy ids (llama.cpp's smallest top-2 margin ${smallest})`);
        }
      } finally {
        await model.release();
      }
    });
  }
}
