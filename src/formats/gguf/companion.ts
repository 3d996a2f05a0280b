// The marker of a GGUF file's companion folder (model/gguf-model.ts makes them): the folder holds config.json and
// the tokenizer files of the file, and the marker names the file the weights are read from.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const GGUF_SOURCE_MARKER = 'gguf-source.json';

/** The GGUF file behind a companion folder, or null for any other folder. */
export function ggufSourceOf(dir: string): string | null {
  const marker = join(dir, GGUF_SOURCE_MARKER);
  if (!existsSync(marker)) return null;
  return (JSON.parse(readFileSync(marker, 'utf8')) as { file: string }).file;
}
