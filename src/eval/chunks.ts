// Eval windows as llama.cpp's llama-perplexity cuts them, so a figure compares with its own: the whole file as one
// token stream, cut into chunks of `-c` tokens, each chunk's first token made <s>, only its second half scored.
import { InputError } from '../core/errors.js';
import { readUtf8File, type TextTokenizer } from '../formats/tokenizer.js';
import type { EvalWindow } from './dataset.js';

/**
 * The chunks of `path` (llama-perplexity with `-c chunk`): the text tokenized once (with the tokenizer's <s>), cut into
 * floor(tokens / chunk) chunks of `chunk` tokens, the first of each replaced by `bos`; positions chunk/2 .. chunk-2
 * predict the next token, as llama-perplexity scores them (perplexity and --kl-divergence alike).
 */
export function loadChunkedWindows(
  path: string,
  tokenizer: Pick<TextTokenizer, 'encode'>,
  chunk: number,
  context: number,
  bos: number | null,
): EvalWindow[] {
  if (chunk > context) throw new InputError(`--chunks ${chunk}: longer than the model's context of ${context}`);
  const ids = tokenizer.encode(readUtf8File(path));
  const count = Math.floor(ids.length / chunk);
  if (count === 0) throw new InputError(`${path}: ${ids.length} tokens, fewer than one chunk of ${chunk} (--chunks)`);
  const windows: EvalWindow[] = [];
  for (let c = 0; c < count; c++) {
    const window = ids.slice(c * chunk, (c + 1) * chunk);
    if (bos !== null) window[0] = bos;
    windows.push({ line: 0, ids: window, scoreFrom: Math.floor(chunk / 2) });
  }
  return windows;
}
