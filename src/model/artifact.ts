// Opens an llmopt artifact folder (formats/artifact.ts): its graph, manifest and the spec of its config.json,
// read through model/architectures/ like a checkpoint's, which is why this sits above formats/.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { findModelFile, type Artifact, type ArtifactManifest } from '../formats/artifact.js';
import { MANIFEST_FILE, readManifest } from '../formats/manifest.js';
import { readModelSpec } from './architectures/index.js';

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
