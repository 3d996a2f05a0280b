// llmopt.json, the one manifest shape of every folder llmopt writes (artifacts, checkpoints, sharded
// models, recipe results): where it came from, every pass with its resolved options, and the tool.
import { ggufSourceOf } from './gguf/companion.js';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { readJsonFile } from './hf-config.js';
import type { AttentionForm } from '../core/io.js';

/** Marker file that tells llmopt an existing folder is its own output and may be replaced. */
export const MANIFEST_FILE = 'llmopt.json';

export const TOOL_VERSION: string = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

export interface PassRecord {
  pass: string;
  options: Record<string, unknown>;
  at: string;
}

/**
 * What the folder is; readers switch on it (openArtifact, isShardedModel). The values are those of the
 * manifests written before the shapes were merged, so older folders still open.
 */
export type ManifestFormat = 'llmopt-artifact' | 'llmopt-checkpoint' | 'llmopt-sharded' | 'llmopt-tensorrt-llm' | 'llmopt-stage-result';

/** The graph of an ONNX artifact: its files and how it was built. */
export interface ModelBlock {
  file: string;
  dataFile: string | null;
  attention: AttentionForm;
  precision: string;
  opset: number;
}

export interface Manifest {
  format: ManifestFormat;
  formatVersion: 1;
  tool: { name: 'llmopt'; version: string };
  /** The folder (or GGUF file) the output was made from (null for generated models and recipe results). */
  source: { path: string; configSha256: string | null } | null;
  /** Every pass from the original checkpoint on, oldest first. */
  passes: PassRecord[];
  /** ONNX artifacts only. */
  model?: ModelBlock;
}

/** sha256 of `dir`/config.json, or null when there is none. */
export function configSha256(dir: string): string | null {
  const path = join(dir, 'config.json');
  return existsSync(path) ? createHash('sha256').update(readFileSync(path)).digest('hex') : null;
}

/**
 * The manifest of a folder made from `source` by `passes` (the source's own passes are kept ahead of
 * them). `extra` holds what a format adds (the sharded layout and ranks, which runtime/sharded reads).
 */
export function buildManifest(
  format: ManifestFormat,
  source: string | null,
  passes: PassRecord[],
  extra: Record<string, unknown> = {},
): Manifest {
  return {
    format,
    formatVersion: 1,
    tool: { name: 'llmopt', version: TOOL_VERSION },
    source: source === null ? null : { path: ggufSourceOf(source) ?? resolve(source), configSha256: configSha256(source) },
    passes: [...(source === null ? [] : priorPasses(source)), ...passes],
    ...extra,
  };
}

export function writeManifest(dir: string, manifest: Manifest): void {
  writeFileSync(join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
}

/** `dir`'s llmopt.json, or null when it has none. */
export function readManifest(dir: string): Manifest | null {
  const path = join(dir, MANIFEST_FILE);
  return existsSync(path) ? (readJsonFile(path) as unknown as Manifest) : null;
}

/** Passes recorded in `dir`'s llmopt.json (a folder llmopt wrote), so a chain of passes keeps its history. */
export function priorPasses(dir: string): PassRecord[] {
  const m = readManifest(dir) as { passes?: PassRecord[] } | null;
  return Array.isArray(m?.passes) ? m.passes : [];
}

/** A pass record stamped now. */
export function passRecord(pass: string, options: Record<string, unknown>): PassRecord {
  return { pass, options, at: new Date().toISOString() };
}
