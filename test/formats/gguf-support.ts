// Tools of the GGUF writer's tests: llama.cpp's binaries (skip when absent), llama-dump-logits runs, a GGUF's tensors
// dequantized and laid back out as a Hugging Face folder (so llmopt's own runtime runs the very weights llama.cpp
// runs), greedy ids of llmopt's ONNX artifact, and comparisons of two GGUF files.
import { execFile, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { checkpointTensors, fusedLayout } from '../../src/core/fused.js';
import { expectedTensors } from '../../src/core/spec.js';
import { fromGgufLayout, ggufArchitectureOf, ggufTensorPlan } from '../../src/formats/gguf/architectures.js';
import { readGgufHeader, readGgufTensor, type GgufFile, type GgufValue } from '../../src/formats/gguf/file.js';
import { dequantizeTensor } from '../../src/model/gguf-model.js';
import { writeSafetensors } from '../../src/formats/safetensors.js';
import { TOKENIZER_FILES } from '../../src/formats/tokenizer.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { exportModel } from '../../src/passes/export.js';
import { DecoderModel } from '../../src/runtime/decoder.js';
import { generate } from '../../src/runtime/generate.js';
import { GREEDY } from '../../src/runtime/sampling.js';
import { SHARED } from '../support.js';

export const LLAMACPP = join(SHARED, 'tools', 'llama.cpp');
export const DUMP = join(LLAMACPP, 'bin', 'llama-dump-logits');
export const CONVERT = join(LLAMACPP, 'convert', 'convert_wrap.py');
export const PYTHON = '/usr/bin/python3';

/** Why the llama.cpp checks are skipped, or undefined. */
export function llamacppSkip(): string | undefined {
  return existsSync(DUMP) ? undefined : `llama.cpp is absent (${DUMP}): the GGUF checks against llama.cpp are skipped`;
}

/** Why checks that run llama.cpp's converter are skipped, or undefined. */
export function converterSkip(): string | undefined {
  if (!existsSync(CONVERT)) return `llama.cpp's converter is absent (${CONVERT}): skipped`;
  const py = spawnSync(PYTHON, ['-c', 'import torch, sentencepiece, tqdm'], { encoding: 'utf8' });
  return py.status === 0 ? undefined : `${PYTHON} cannot import torch, sentencepiece and tqdm: the converter comparison is skipped`;
}

const run = promisify(execFile);

export interface Dump {
  prompt_ids: number[];
  greedy_ids: number[];
  greedy_top2_margin: number[];
  /** Logits of each greedy step (the row that chose greedy_ids[i]). */
  greedy_step_logits: number[][];
  /** llama.cpp's stderr: its loader's messages. */
  log: string;
}

/** llama.cpp's greedy continuation of `prompt` (F32 KV cache, one token at a time), with its loader's log. */
export async function llamacppGreedy(gguf: string, prompt: number[], steps: number, nCtx: number, out: string): Promise<Dump> {
  const env = { ...process.env, LLAMA_BACKEND_DIR: join(LLAMACPP, 'bin') };
  const { stderr } = await run(DUMP, [gguf, prompt.slice(0, 2).join(','), prompt.join(','), String(steps), String(nCtx), out], {
    env,
    maxBuffer: 64 << 20,
  });
  return { ...JSON.parse(readFileSync(out, 'utf8')), log: stderr };
}

/** Lines of llama.cpp's loader that warn about the vocabulary (a missing pre-tokenizer, degraded output, bad ids). */
export function tokenizerWarnings(log: string): string[] {
  return log
    .split('\n')
    .filter((l) => /^(load|llama_model_load|llm_load_vocab|print_info)/.test(l) || /vocab|token/i.test(l))
    .filter((l) => /warn|missing|degrad|unknown|not recogni[sz]ed|mismatch|invalid|failed/i.test(l));
}

/** A tensor's float values as the file stores them (the reader's dequantization). */
export async function ggufFloats(file: GgufFile, name: string): Promise<Float32Array> {
  const t = file.tensors.find((x) => x.name === name);
  if (!t) throw new Error(`${file.path}: no tensor ${name}`);
  return dequantizeTensor(file, t);
}

/**
 * The Hugging Face folder of a GGUF written from `source`: every tensor dequantized and laid back out (layout
 * transforms inverted, fused tensors fused as the checkpoint stores them), float32, with the source's config and tokenizer.
 */
export async function ggufAsHfFolder(gguf: string, source: string, out: string): Promise<string> {
  mkdirSync(out, { recursive: true });
  const spec = readModelSpec(source);
  const arch = ggufArchitectureOf(spec);
  const file = readGgufHeader(gguf);
  const values = new Map<string, Float32Array>();
  for (const entry of ggufTensorPlan(spec, arch, expectedTensors(spec))) {
    const parts = fromGgufLayout(spec, entry, await ggufFloats(file, entry.gguf));
    entry.hf.forEach((name, i) => values.set(name, parts[i]!));
  }
  const fused = fusedLayout(spec);
  const stored = [...checkpointTensors(spec)].map(([name, shape]) => ({ name, dtype: 'F32' as const, shape }));
  await writeSafetensors(join(out, 'model.safetensors'), stored, (name) => {
    const f = fused.get(name);
    const parts = f ? f.parts.map((p) => values.get(p.name)!) : [values.get(name)!];
    const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return new Uint8Array(all.buffer);
  });
  const config = JSON.parse(readFileSync(join(source, 'config.json'), 'utf8'));
  writeFileSync(join(out, 'config.json'), JSON.stringify({ ...config, torch_dtype: 'float32' }));
  for (const f of ['generation_config.json', ...TOKENIZER_FILES])
    if (existsSync(join(source, f))) copyFileSync(join(source, f), join(out, f));
  return out;
}

/** Greedy ids of llmopt's ONNX artifact of a Hugging Face folder (float32, fused attention). */
export async function llmoptGreedy(hf: string, artifact: string, prompt: number[], steps: number): Promise<number[]> {
  await exportModel(hf, artifact, { attention: 'fused', layout: 'llmopt' });
  const model = await DecoderModel.open(artifact, { device: 'cpu' });
  try {
    const r = await generate(model, [prompt], { maxNewTokens: steps, sampling: GREEDY, stopTokens: [] });
    return r.tokens[0]!;
  } finally {
    await model.release();
  }
}

const show = (v: GgufValue | undefined) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? String(x) : x));

/** Metadata keys whose values differ between two files (either missing counts), and tensors whose bytes differ. */
export async function ggufDifferences(a: GgufFile, b: GgufFile, ignore: (key: string) => boolean = () => false) {
  const keys = [...new Set([...a.metadata.keys(), ...b.metadata.keys()])].filter((k) => !ignore(k));
  const metadata = keys.filter((k) => show(a.metadata.get(k)) !== show(b.metadata.get(k)));
  const tensors: string[] = [];
  const bByName = new Map(b.tensors.map((t) => [t.name, t]));
  for (const t of a.tensors) {
    const u = bByName.get(t.name);
    const same =
      u !== undefined &&
      u.type === t.type &&
      JSON.stringify(u.shape) === JSON.stringify(t.shape) &&
      Buffer.compare(Buffer.from(await readGgufTensor(a, t)), Buffer.from(await readGgufTensor(b, u))) === 0;
    if (!same) tensors.push(t.name);
  }
  for (const u of b.tensors) if (!a.tensors.some((t) => t.name === u.name)) tensors.push(u.name);
  return { metadata, tensors };
}
