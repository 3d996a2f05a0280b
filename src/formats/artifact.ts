// The llmopt artifact: a complete model folder (model.onnx + model.onnx.data, config, tokenizer) and
// its manifest llmopt.json (formats/manifest.ts), whose `model` block names the graph and its form.
// model/artifact.ts opens one (its spec is read through model/architectures/).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Manifest, ModelBlock } from './manifest.js';
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

/** True when `dir` holds an ONNX artifact rather than a Hugging Face checkpoint. */
export function isArtifact(dir: string): boolean {
  return findModelFile(dir) !== null;
}
