// Loads a Hugging Face tokenizer.json (+ tokenizer_config.json) with the pure-JS @huggingface/tokenizers,
// and decodes generated ids incrementally for streaming output.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { InputError } from '../core/errors.js';
import { readJsonFile } from './hf-config.js';

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model'];

export class TextTokenizer {
  constructor(
    private readonly tok: Tokenizer,
    readonly path: string,
    /** Added tokens marked special (content -> id): what ends a chat turn is one of these. */
    readonly specialTokens: ReadonlyMap<string, number> = new Map(),
    /** tokenizer_config.json, as read (the chat template and the bos/eos strings it uses live there). */
    readonly config: Record<string, unknown> = {},
  ) {}

  /** Token ids of `text`; with special tokens (`<s>`) as the tokenizer's post-processor adds them. */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: number[], skipSpecialTokens = true): string {
    return this.tok.decode(ids, { skip_special_tokens: skipSpecialTokens });
  }

  tokenId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }
}

/** Loads `<dir>/tokenizer.json`; tokenizer_config.json is optional. */
export function loadTokenizer(dir: string): TextTokenizer {
  const path = join(dir, 'tokenizer.json');
  if (!existsSync(path)) throw new InputError(`${dir}: no tokenizer.json (llmopt reads Hugging Face fast-tokenizer files)`);
  const json = readJsonFile(path);
  const cfgPath = join(dir, 'tokenizer_config.json');
  const cfg = existsSync(cfgPath) ? readJsonFile(cfgPath) : {};
  const added = Array.isArray(json.added_tokens) ? (json.added_tokens as Array<{ id: number; content: string; special?: boolean }>) : [];
  const special = new Map(added.filter((t) => t.special).map((t) => [t.content, t.id] as const));
  try {
    return new TextTokenizer(new Tokenizer(json, cfg), path, special, cfg);
  } catch (e) {
    throw new InputError(`${path}: cannot build the tokenizer (${(e as Error).message})`);
  }
}

/**
 * Turns a growing list of generated ids into text deltas. Byte-fallback tokens can split a
 * character across tokens, so text ending in U+FFFD is held back until the character completes.
 */
export class StreamingDecoder {
  private ids: number[] = [];
  private emitted = '';

  constructor(private readonly tokenizer: TextTokenizer) {}

  push(id: number): string {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids);
    if (text.endsWith('\uFFFD') || !text.startsWith(this.emitted)) return '';
    const delta = text.slice(this.emitted.length);
    this.emitted = text;
    return delta;
  }

  /** Whatever is left (an incomplete character at the end is emitted as-is). */
  flush(): string {
    if (this.ids.length === 0) return '';
    const text = this.tokenizer.decode(this.ids);
    const delta = text.startsWith(this.emitted) ? text.slice(this.emitted.length) : '';
    this.emitted = text;
    return delta;
  }
}

/** Reads a text file that must be UTF-8 (eval data, prompt files), naming the file otherwise. */
export function readUtf8File(path: string): string {
  if (!existsSync(path)) throw new InputError(`${path}: file not found`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(path));
  } catch {
    throw new InputError(`${path}: not valid UTF-8 text`);
  }
}
