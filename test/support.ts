// Shared test paths and small tools: the fixtures, ../shared (tests that need it skip when absent),
// temp folders, exports cached per test file, and running the built CLI.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { exportModel } from '../src/passes/export.js';
import type { AttentionForm } from '../src/core/io.js';
import type { LlamaShape } from '../src/model/synthetic.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const FIXTURES = join(ROOT, 'fixtures');
export const MHA = join(FIXTURES, 'tiny-llama-mha');
export const GQA = join(FIXTURES, 'tiny-llama-gqa');
export const SAMPLE_TEXT = join(FIXTURES, 'text', 'sample.txt');

export const SHARED = join(ROOT, '..', 'shared');
export const AIDREAMS = join(SHARED, 'models', 'aidreams-260k');
export const DREAMS_EVAL = join(SHARED, 'data', 'dreams-eval.txt');
export const DREAMS_TRAIN = join(SHARED, 'data', 'dreams-train.txt');
/** A skip message for node:test when ../shared is absent (undefined when present). */
export const NEEDS_SHARED = existsSync(AIDREAMS)
  ? undefined
  : `../shared is absent (${SHARED}): the aidreams-260k oracle tests are skipped`;

export interface Reference {
  greedy_from_bos: { ids: number[] };
  greedy_from_prompt: { prompt: string; prompt_ids: number[]; ids: number[] };
  logits: { input_ids: number[]; values: number[][] };
}
export function aidreamsReference(): Reference {
  return JSON.parse(readFileSync(join(AIDREAMS, 'reference.json'), 'utf8'));
}

/** The tiny checkpoints of other architectures in ../shared/models, each with llama.cpp's reference.json. */
export const TINY_MODELS = ['qwen2-tiny', 'qwen3-tiny', 'smollm3-tiny', 'phi3-tiny'] as const;
export const sharedModel = (name: string) => join(SHARED, 'models', name);
/** A skip message for a test that needs ../shared/models/<name> (undefined when present). */
export function needsSharedModel(name: string): string | undefined {
  return existsSync(join(sharedModel(name), 'reference.json')) ? undefined : `../shared/models/${name} is absent: its tests are skipped`;
}
export interface TinyReference {
  logits: { input_ids: number[]; values: number[][] };
  greedy_from_prompt: { prompt_ids: number[]; ids: number[] };
}
export function tinyReference(name: string): TinyReference {
  return JSON.parse(readFileSync(join(sharedModel(name), 'reference.json'), 'utf8'));
}

const tempDirs: string[] = [];
process.on('exit', () => tempDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A temp folder removed at process exit. */
export function tempDir(prefix = 'llmopt-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

const exported = new Map<string, Promise<string>>();
/** Exports `source` once per (source, form) in this test process and returns the artifact folder. */
export function exportedArtifact(source: string, attention: AttentionForm): Promise<string> {
  const key = `${source}|${attention}`;
  if (!exported.has(key)) {
    const out = join(tempDir(), 'artifact');
    exported.set(
      key,
      exportModel(source, out, { attention, layout: 'llmopt' }).then(() => out),
    );
  }
  return exported.get(key)!;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}
/** Runs the built CLI (bin/llmopt.js -> dist/) as a user would. */
export function runCli(args: string[], cwd = ROOT): CliResult {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'llmopt.js'), ...args], { cwd, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A Llama 3.x shape for synthetic checkpoints: SmolLM2's 9 heads / 3 kv heads at hidden 576, tied embeddings,
 * llama3 rope scaling (original context 8, so every frequency band is exercised).
 */
export const LLAMA3_SHAPE: LlamaShape = {
  hidden_size: 576,
  num_hidden_layers: 2,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  intermediate_size: 384,
  vocab_size: 320,
  max_position_embeddings: 256,
  rope_theta: 500000,
  rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 },
  rms_norm_eps: 1e-5,
  tie_word_embeddings: true,
  attention_bias: false,
  mlp_bias: false,
  torch_dtype: 'float32',
};
