// The llmopt artifact: a complete model folder (model.onnx + model.onnx.data, config, tokenizer) and
// its manifest llmopt.json (formats/manifest.ts), whose `model` block names the graph and its form.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { readModelSpec } from './hf-config.js';
import { MANIFEST_FILE, readManifest, type Manifest, type ModelBlock } from './manifest.js';
import type { DecoderSpec } from '../core/spec.js';
import type { AttentionForm } from '../core/io.js';

export { TOOL_VERSION, priorPasses, type PassRecord } from './manifest.js';

/** The manifest of an ONNX artifact: the one shape, with its `model` block. */
export type ArtifactManifest = Manifest & { format: 'llmopt-artifact'; model: ModelBlock };

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
  const manifest = readManifest(dir);
  if (manifest && (manifest.format !== 'llmopt-artifact' || !manifest.model)) {
    throw new InputError(`${join(dir, MANIFEST_FILE)}: not an llmopt artifact manifest`);
  }
  const attention = manifest?.model?.attention ?? null;
  return { dir, modelPath, manifest: manifest as ArtifactManifest | null, spec: readModelSpec(dir), attention };
}

/** True when `dir` holds an ONNX artifact rather than a Hugging Face checkpoint. */
export function isArtifact(dir: string): boolean {
  return findModelFile(dir) !== null;
}
