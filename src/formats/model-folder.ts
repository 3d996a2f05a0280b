// The one writer of model folders (export, quantize, prune, distill, shard, synth, recipe results):
// checks the target and the source's tokenizer first, writes atomically through writeOutputDir, copies
// the tokenizer and generation config, and writes llmopt.json in the one manifest shape.
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildManifest, writeManifest, type ManifestFormat, type ModelBlock, type PassRecord } from './manifest.js';
import { checkReplaceable, writeOutputDir } from './output-dir.js';
import { TOKENIZER_FILES, loadTokenizer } from './tokenizer.js';

/** Files a model folder carries over from the folder it was made from, as they are. */
export const COPIED_FILES = ['generation_config.json', ...TOKENIZER_FILES];

export interface ModelFolderOptions {
  format: ManifestFormat;
  /** The folder the output is made from: its passes are kept and its config.json hashed (null: none). */
  source: string | null;
  /** Where the tokenizer files come from (default: `source`; null: none, as TensorRT-LLM folders). */
  filesFrom?: string | null;
  /** The passes this write records, after the source's own. */
  passes: PassRecord[];
  /** ONNX artifacts: the graph's files and form. */
  model?: ModelBlock;
}

/**
 * A tokenizer.json that does not parse or that the tokenizer library refuses is bad input (InputError
 * naming the file): it is checked before anything is written rather than copied into a broken output.
 */
export function checkTokenizer(dir: string): void {
  if (existsSync(join(dir, 'tokenizer.json'))) loadTokenizer(dir);
}

/** Copies the tokenizer and generation config files `from` has into `to`. */
export function copyModelFiles(from: string, to: string): void {
  for (const f of COPIED_FILES) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
}

/**
 * Writes a model folder at `target`: `write(tmp, extra)` writes the model's own files into the temporary
 * folder (and may add format-specific manifest fields to `extra`); then the tokenizer files are copied,
 * llmopt.json written, and the folder renamed into place. Nothing is written when a check fails.
 */
export async function writeModelFolder<T>(
  target: string,
  o: ModelFolderOptions,
  write: (tmp: string, extra: Record<string, unknown>) => Promise<T>,
): Promise<T> {
  checkReplaceable(target);
  const filesFrom = o.filesFrom === undefined ? o.source : o.filesFrom;
  if (filesFrom !== null) checkTokenizer(filesFrom);
  return writeOutputDir(target, async (tmp) => {
    const extra: Record<string, unknown> = {};
    const result = await write(tmp, extra);
    if (filesFrom !== null) copyModelFiles(filesFrom, tmp);
    writeManifest(tmp, buildManifest(o.format, o.source, o.passes, { ...(o.model ? { model: o.model } : {}), ...extra }));
    return result;
  });
}
