// The llmopt artifact: a complete model folder (model.onnx + model.onnx.data, config, tokenizer) and
// its manifest llmopt.json, which records the source, every pass applied with its options, and the tool.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { readJsonFile, readModelSpec } from './hf-config.js';
import { MANIFEST_FILE } from './output-dir.js';
import type { DecoderSpec } from '../core/spec.js';
import type { AttentionForm } from '../core/io.js';

export const TOOL_VERSION: string = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

export interface PassRecord {
  pass: string;
  options: Record<string, unknown>;
  at: string;
}

export interface ArtifactManifest {
  format: 'llmopt-artifact';
  formatVersion: 1;
  tool: { name: 'llmopt'; version: string };
  source: { path: string; configSha256?: string };
  model: { file: string; dataFile: string | null; attention: AttentionForm; precision: string; opset: number };
  passes: PassRecord[];
}

export interface Artifact {
  dir: string;
  modelPath: string;
  manifest: ArtifactManifest | null;
  spec: DecoderSpec;
  /** Attention form, from the manifest (absent: the runtime identifies it from the graph, core/io.ts attentionFormOf). */
  attention: AttentionForm | null;
}

/** Where an artifact's model.onnx lives: the folder itself, or onnx/ for the transformers.js layout. */
export function findModelFile(dir: string): string | null {
  for (const rel of ['model.onnx', join('onnx', 'model.onnx')]) if (existsSync(join(dir, rel))) return join(dir, rel);
  return null;
}

/** Opens an artifact folder: model.onnx and config.json are required, llmopt.json is read when present. */
export function openArtifact(dir: string): Artifact {
  if (!existsSync(dir)) throw new InputError(`${dir}: folder not found`);
  const modelPath = findModelFile(dir);
  if (!modelPath) throw new InputError(`${dir}: no model.onnx (not an exported artifact; run \`llmopt export\` first)`);
  const manifestPath = join(dir, MANIFEST_FILE);
  const manifest = existsSync(manifestPath) ? (readJsonFile(manifestPath) as unknown as ArtifactManifest) : null;
  if (manifest && manifest.format !== 'llmopt-artifact') throw new InputError(`${manifestPath}: not an llmopt manifest`);
  return { dir, modelPath, manifest, spec: readModelSpec(dir), attention: manifest?.model.attention ?? null };
}

/** The manifest of a Hugging Face folder llmopt wrote (prune, compressed-tensors quantize, synth). */
export interface CheckpointManifest {
  format: 'llmopt-checkpoint';
  formatVersion: 1;
  tool: { name: 'llmopt'; version: string };
  source: { path: string } | null;
  passes: PassRecord[];
}

/** Writes llmopt.json into a Hugging Face folder llmopt produced, so a rerun may replace the folder. */
export function writeCheckpointManifest(dir: string, source: string | null, passes: PassRecord[]): void {
  const manifest: CheckpointManifest = { format: 'llmopt-checkpoint', formatVersion: 1, tool: { name: 'llmopt', version: TOOL_VERSION }, source: source ? { path: source } : null, passes };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
}

export function writeManifest(dir: string, manifest: ArtifactManifest): void {
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
}

/** Passes recorded in `dir`'s llmopt.json (a folder llmopt wrote), so a chain of passes keeps its history. */
export function priorPasses(dir: string): PassRecord[] {
  const path = join(dir, MANIFEST_FILE);
  if (!existsSync(path)) return [];
  const m = readJsonFile(path) as { passes?: PassRecord[] };
  return Array.isArray(m.passes) ? m.passes : [];
}

/** True when `dir` holds an ONNX artifact rather than a Hugging Face checkpoint. */
export function isArtifact(dir: string): boolean {
  return findModelFile(dir) !== null;
}
