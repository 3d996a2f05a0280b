// Eval text: one document per line, tokenized with BOS, cut into windows no longer than the
// model's context; every window is scored on its own (tokens 1.. predicted from those before).
import { InputError } from '../core/errors.js';
import { readUtf8File, type TextTokenizer } from '../formats/tokenizer.js';

export interface EvalWindow {
  /** 1-based line in the file the window comes from. */
  line: number;
  ids: number[];
  /** The first position whose prediction is scored (default 0: every token after the first). */
  scoreFrom?: number;
}

/** Reads and tokenizes `path`; `limit` keeps only the first N documents. */
export function loadEvalWindows(path: string, tokenizer: Pick<TextTokenizer, 'encode'>, context: number, limit?: number): EvalWindow[] {
  const lines = readUtf8File(path).split(/\r?\n/);
  const windows: EvalWindow[] = [];
  let docs = 0;
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!;
    if (text.trim() === '') continue;
    if (limit !== undefined && docs >= limit) break;
    docs++;
    const ids = tokenizer.encode(text);
    for (let start = 0; start < ids.length; start += context) {
      const chunk = ids.slice(start, start + context);
      if (chunk.length >= 2) windows.push({ line: i + 1, ids: chunk });
    }
  }
  if (windows.length === 0)
    throw new InputError(`${path}: no text to evaluate (one document per line; each needs at least one token besides <s>)`);
  return windows;
}
