// The tokenizer as llama.cpp reads it from GGUF metadata, from a Hugging Face folder's tokenizer.json and
// tokenizer_config.json: `llama` (SentencePiece-style BPE with byte fallback) or `gpt2` (byte-level BPE) with the
// pre-tokenizer named as llama.cpp knows it. llama.cpp's converter names the pre-tokenizer by hashing a tokenization
// of a test text; llmopt reads it off tokenizer.json's pre-tokenizer (its regex), and refuses one it cannot name.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../core/errors.js';
import type { Json } from '../hf-config.js';
import type { GgufValue } from './file.js';

/** llama.cpp's token types (llama_token_type). */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** Pre-tokenizer regexes of byte-level BPE tokenizers, as tokenizer.json writes them, by llama.cpp's name. */
export const PRE_TOKENIZER_REGEXES: Record<string, string> = {
  'llama-bpe':
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

/** What the tokenizer metadata says beyond its entries. */
export interface GgufTokenizer {
  entries: Array<[string, GgufValue]>;
  model: 'llama' | 'gpt2';
  pre: string;
  /** Tokens written (the embedding rows llama.cpp expects). */
  tokenCount: number;
}

export interface GgufTokenizerOptions {
  /** The model's vocab_size: the token list is padded to it with unused [PADi] tokens. */
  vocabSize: number;
  /** config.json, whose *_token_id fill special ids tokenizer_config.json leaves unset. */
  config: Json;
  /** tokenizer.ggml.add_space_prefix: tokenizer_config.json's add_prefix_space (`config`), always false, or unwritten. */
  spacePrefix?: 'config' | false;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const readJson = (path: string): Obj | null => (existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Obj) : null);

/** Components of a normalizer or pre-tokenizer (a Sequence's items, or itself). */
function parts(x: unknown, key: 'normalizers' | 'pretokenizers'): Obj[] {
  if (!isObj(x)) return [];
  if (x.type === 'Sequence' && Array.isArray(x[key])) return (x[key] as unknown[]).filter(isObj);
  return [x];
}

/** The pre-tokenizer's name for llama.cpp, or a description of it for the refusal. */
function preTokenizerName(tok: Obj): { name: string } | { unknown: string } {
  const pre = parts(tok.pre_tokenizer, 'pretokenizers');
  const normalizer = parts(tok.normalizer, 'normalizers');
  const describe = JSON.stringify(tok.pre_tokenizer ?? null).slice(0, 200);
  if (normalizer.length > 0) return { unknown: `a ${normalizer.map((n) => n.type).join('+')} normalizer with ${describe}` };
  const byteLevel = (p: Obj | undefined, regex: boolean) =>
    p?.type === 'ByteLevel' && Boolean(p.use_regex ?? true) === regex && !p.add_prefix_space;
  if (pre.length === 1 && byteLevel(pre[0], true)) return { name: 'gpt-2' };
  if (pre.length === 2 && pre[0]!.type === 'Digits' && pre[0]!.individual_digits === true && byteLevel(pre[1], true))
    return { name: 'smollm' };
  if (pre.length === 2 && pre[0]!.type === 'Split' && byteLevel(pre[1], false)) {
    const pattern = isObj(pre[0]!.pattern) ? pre[0]!.pattern.Regex : undefined;
    const name = Object.entries(PRE_TOKENIZER_REGEXES).find(([, re]) => re === pattern)?.[0];
    if (name && pre[0]!.behavior === 'Isolated') return { name };
  }
  return { unknown: describe };
}

/** Whether a SentencePiece-style tokenizer.json prepends "▁" itself (llama.cpp's add_space_prefix, true by default). */
function prependsSpace(tok: Obj): boolean {
  const prepend = parts(tok.normalizer, 'normalizers').some((n) => n.type === 'Prepend' && n.prepend === '▁');
  const metaspace = parts(tok.pre_tokenizer, 'pretokenizers').some(
    (p) => p.type === 'Metaspace' && (p.prepend_scheme === 'always' || p.prepend_scheme === 'first' || p.add_prefix_space === true),
  );
  return prepend || metaspace;
}

/** Whether the converter would mark an added token as control although tokenizer.json does not say special. */
const looksSpecial = (t: string) =>
  ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t) ||
  (t.startsWith('<|') && t.endsWith('|>')) ||
  (t.startsWith('<｜') && t.endsWith('｜>')) ||
  (t.startsWith('<unused') && t.endsWith('>'));

const SPECIAL_TYPES = ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'] as const;
const SPECIAL_KEYS: Record<(typeof SPECIAL_TYPES)[number], string> = {
  bos: 'tokenizer.ggml.bos_token_id',
  eos: 'tokenizer.ggml.eos_token_id',
  unk: 'tokenizer.ggml.unknown_token_id',
  sep: 'tokenizer.ggml.seperator_token_id',
  pad: 'tokenizer.ggml.padding_token_id',
  cls: 'tokenizer.ggml.cls_token_id',
  mask: 'tokenizer.ggml.mask_token_id',
};

/** Special token ids (tokenizer_config.json's tokens by content, then config.json's ids) and whether bos/eos are added. */
function specials(tok: Obj, tc: Obj | null, config: Json, nVocab: number) {
  const added = (Array.isArray(tok.added_tokens) ? tok.added_tokens : []).filter(isObj);
  const ids = new Map<string, number>();
  const set = (typ: string, id: unknown) => {
    if (typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < nVocab && !ids.has(typ)) ids.set(typ, id);
  };
  const add = new Map<string, boolean>();
  const content = (v: unknown) => (typeof v === 'string' ? v : isObj(v) && typeof v.content === 'string' ? v.content : undefined);
  // A post-processor template adding a special token first (last) adds bos (eos), as the converter reads it.
  const post = isObj(tok.post_processor) ? tok.post_processor : null;
  for (const p of post ? (Array.isArray(post.processors) ? post.processors.filter(isObj) : [post]) : []) {
    if (p.type === 'RobertaProcessing') {
      add.set('bos', true);
      add.set('eos', true);
    }
    if (p.type === 'TemplateProcessing' && Array.isArray(p.single) && p.single.length > 1) {
      const tokenOf = (x: unknown) => (isObj(x) && isObj(x.SpecialToken) ? String(x.SpecialToken.id) : undefined);
      const first = tokenOf(p.single[0]);
      const last = tokenOf(p.single.at(-1));
      if (first) add.set('bos', first === content(tc?.bos_token) || first === content(tc?.cls_token) || !tc);
      if (last) add.set('eos', last === content(tc?.eos_token) || !tc);
    }
  }
  for (const typ of SPECIAL_TYPES) {
    const flag = tc?.[`add_${typ}_token`];
    if (typeof flag === 'boolean') add.set(typ, flag);
    const c = content(tc?.[`${typ}_token`]);
    if (c !== undefined) set(typ, added.find((a) => a.content === c)?.id);
  }
  for (const typ of SPECIAL_TYPES) set(typ, config[`${typ}_token_id`]);
  return { ids, add };
}

function chatTemplate(dir: string, tc: Obj | null): Array<[string, GgufValue]> {
  if (!tc) return [];
  let template: unknown = tc.chat_template;
  if (template === undefined) {
    if (existsSync(join(dir, 'chat_template.jinja'))) template = readFileSync(join(dir, 'chat_template.jinja'), 'utf8');
    else if (existsSync(join(dir, 'chat_template.json'))) template = readJson(join(dir, 'chat_template.json'))?.chat_template;
  }
  if (typeof template === 'string') return [['tokenizer.chat_template', { type: 'string', value: template }]];
  if (!Array.isArray(template)) return [];
  // Named templates: the default one as tokenizer.chat_template, the others under their (sanitized) names.
  const out: Array<[string, GgufValue]> = [];
  const names: string[] = [];
  let fallback: string | undefined;
  for (const t of template.filter(isObj)) {
    const name = String(t.name ?? '').replace(/[^A-Za-z0-9]/g, '_');
    if (!name || typeof t.template !== 'string') continue;
    if (name === 'default') fallback = t.template;
    else {
      names.push(name);
      out.push([`tokenizer.chat_template.${name}`, { type: 'string', value: t.template }]);
    }
  }
  if (names.length > 0) out.push(['tokenizer.chat_templates', { type: 'array', itemType: 'string', value: names }]);
  if (fallback !== undefined) out.push(['tokenizer.chat_template', { type: 'string', value: fallback }]);
  return out;
}

/** Merges as llama.cpp stores them: "a b", spaces inside a part written as U+0120 (the converter's encoding). */
function mergeStrings(merges: unknown, path: string): string[] {
  if (!Array.isArray(merges)) return [];
  return merges.map((m) => {
    if (typeof m === 'string') return m;
    if (Array.isArray(m) && m.length === 2) return m.map((p) => String(p).replaceAll(' ', '\u0120')).join(' ');
    throw new InputError(`${path}: model.merges holds ${JSON.stringify(m).slice(0, 40)}, neither "a b" nor ["a", "b"]`);
  });
}

/** The tokenizer metadata of a Hugging Face folder, as llama.cpp loads it. */
export function ggufTokenizer(dir: string, o: GgufTokenizerOptions): GgufTokenizer {
  const path = join(dir, 'tokenizer.json');
  const tok = readJson(path);
  if (!tok) {
    const spm = existsSync(join(dir, 'tokenizer.model')) ? ' (llmopt does not read tokenizer.model; add a tokenizer.json)' : '';
    throw new InputError(`${dir}: no tokenizer.json: GGUF holds the tokenizer${spm}`);
  }
  const tc = readJson(join(dir, 'tokenizer_config.json'));
  const model = isObj(tok.model) ? tok.model : {};
  if (model.type !== 'BPE' || !isObj(model.vocab)) {
    throw new InputError(`${path}: a ${String(model.type)} tokenizer; llmopt writes BPE tokenizers to GGUF (llama or gpt2)`);
  }
  const byteLevel = parts(tok.pre_tokenizer, 'pretokenizers').some((p) => p.type === 'ByteLevel');
  const kind: 'llama' | 'gpt2' = model.byte_fallback === true && !byteLevel ? 'llama' : 'gpt2';
  let pre = 'default';
  if (kind === 'gpt2') {
    const named = preTokenizerName(tok);
    if ('unknown' in named) {
      throw new InputError(
        `${path}: llmopt cannot name this pre-tokenizer for llama.cpp (${named.unknown}); it names gpt-2, smollm, ` +
          `${Object.keys(PRE_TOKENIZER_REGEXES).join(', ')}: llama.cpp would split text differently, so no GGUF is written`,
      );
    }
    pre = named.name;
  }

  const vocab = new Map<number, string>();
  for (const [t, id] of Object.entries(model.vocab)) vocab.set(Number(id), t);
  const added = (Array.isArray(tok.added_tokens) ? tok.added_tokens : []).filter(isObj);
  const addedById = new Map(added.map((a) => [Number(a.id), a]));
  for (const a of added) vocab.set(Number(a.id), String(a.content));
  const maxId = Math.max(...vocab.keys());
  if (maxId >= o.vocabSize && kind === 'gpt2') {
    throw new InputError(`${path}: token id ${maxId} is beyond config.json's vocab_size ${o.vocabSize}`);
  }
  const n = Math.max(o.vocabSize, maxId + 1);
  const { ids, add } = specials(tok, tc, o.config, n);
  const specialIds = new Set(ids.values());

  // Merge ranks become SentencePiece-style scores (earlier merge, higher score): llama.cpp's `llama` tokenizer merges
  // by score, so this reproduces the BPE merge order (llama.cpp's converter writes -1000 for every token here).
  const rank = new Map<string, number>();
  if (kind === 'llama') mergeStrings(model.merges, path).forEach((m, r) => rank.set(m.replace(' ', ''), r));

  const tokens: string[] = [];
  const types: number[] = [];
  const scores: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = vocab.get(i);
    const a = addedById.get(i);
    if (t === undefined) {
      tokens.push(`[PAD${i}]`);
      types.push(TOKEN_TYPE.unused);
      scores.push(-1000);
      continue;
    }
    let text = t;
    let type: number = TOKEN_TYPE.normal;
    if (kind === 'llama' && /^<0x[0-9A-Fa-f]{2}>$/.test(t)) type = TOKEN_TYPE.byte;
    else if (a && (a.special === true || looksSpecial(t))) type = TOKEN_TYPE.control;
    else if (kind === 'llama' && specialIds.has(i)) type = TOKEN_TYPE.control;
    else if (a) {
      type = TOKEN_TYPE.userDefined;
      text = t.replaceAll('▁', ' ');
    }
    tokens.push(text);
    types.push(type);
    scores.push(type === TOKEN_TYPE.normal && rank.has(t) ? -(rank.get(t)! + 1) : type === TOKEN_TYPE.normal ? 0 : -1000);
  }

  const entries: Array<[string, GgufValue]> = [];
  const addPrefix = tc?.add_prefix_space;
  if (o.spacePrefix === 'config' && typeof addPrefix === 'boolean')
    entries.push(['tokenizer.ggml.add_space_prefix', { type: 'bool', value: addPrefix }]);
  entries.push(['tokenizer.ggml.model', { type: 'string', value: kind }]);
  entries.push(['tokenizer.ggml.pre', { type: 'string', value: pre }]);
  entries.push(['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: tokens }]);
  if (kind === 'llama') entries.push(['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: scores }]);
  entries.push(['tokenizer.ggml.token_type', { type: 'array', itemType: 'i32', value: types }]);
  if (kind === 'gpt2') {
    const merges = mergeStrings(model.merges, path);
    if (merges.length === 0) throw new InputError(`${path}: a byte-level BPE tokenizer without merges`);
    entries.push(['tokenizer.ggml.merges', { type: 'array', itemType: 'string', value: merges }]);
  }
  for (const [typ, id] of ids) entries.push([SPECIAL_KEYS[typ as keyof typeof SPECIAL_KEYS], { type: 'u32', value: id }]);
  for (const typ of ['bos', 'eos'] as const) {
    const v = add.get(typ);
    if (v !== undefined) entries.push([`tokenizer.ggml.add_${typ}_token`, { type: 'bool', value: v }]);
  }
  entries.push(...chatTemplate(dir, tc));
  // Gemma's converter says false; so does a SentencePiece-style tokenizer.json that does not prepend "▁" (llama.cpp
  // would, by default).
  const noPrefix = o.spacePrefix === false || (kind === 'llama' && !prependsSpace(tok));
  if (noPrefix && !entries.some(([k]) => k === 'tokenizer.ggml.add_space_prefix'))
    entries.push(['tokenizer.ggml.add_space_prefix', { type: 'bool', value: false }]);
  return { entries, model: kind, pre, tokenCount: n };
}
