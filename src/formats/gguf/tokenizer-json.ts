// The Hugging Face tokenizer files of a GGUF file's tokenizer metadata (the reader's direction of tokenizer.ts):
// `gpt2` becomes a byte-level BPE with the pre-tokenizer llama.cpp's `pre` names, `llama` a SentencePiece-style BPE
// with byte fallback whose merges are rebuilt from the token scores, as transformers' GGUF loader rebuilds them.
import { InputError } from '../../core/errors.js';
import type { Json } from '../hf-config.js';
import type { GgufValue } from './file.js';
import { PRE_TOKENIZER_REGEXES, TOKEN_TYPE } from './tokenizer.js';

/** tokenizer.json, tokenizer_config.json and the special ids of a GGUF tokenizer. */
export interface TokenizerFiles {
  tokenizer: Json;
  tokenizerConfig: Json;
  bos: number | null;
  eos: number | null;
  pad: number | null;
}

const WORD_START = '\u2581';
const BYTE_LEVEL_DECODER = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };

/** The pre-tokenizer of a byte-level BPE llama.cpp names `pre`, or null when llmopt does not know the name. */
function byteLevelPreTokenizer(pre: string): Json | null {
  if (pre === 'gpt-2' || pre === 'default') return { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  if (pre === 'smollm') {
    return {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Digits', individual_digits: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    };
  }
  const regex = PRE_TOKENIZER_REGEXES[pre];
  if (regex === undefined) return null;
  return {
    type: 'Sequence',
    pretokenizers: [
      { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    ],
  };
}

/**
 * BPE merges from SentencePiece-style scores: every split of a token into two vocabulary entries is a merge ranked by
 * the token's score (higher first), ties in the order of the parts' ids (transformers' SentencePieceExtractor).
 */
function mergesFromScores(tokens: string[], scores: number[], types: number[]): string[][] {
  const vocab = new Map<string, number>();
  tokens.forEach((t, i) => {
    if (types[i] === TOKEN_TYPE.normal && !vocab.has(t)) vocab.set(t, i);
  });
  const merges: Array<{ left: string; right: string; score: number }> = [];
  for (const [token, id] of vocab) {
    const chars = Array.from(token);
    const local: Array<{ left: string; right: string; score: number }> = [];
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join('');
      const right = chars.slice(i).join('');
      if (vocab.has(left) && vocab.has(right)) local.push({ left, right, score: scores[id]! });
    }
    local.sort((a, b) => vocab.get(a.left)! - vocab.get(b.left)! || vocab.get(a.right)! - vocab.get(b.right)!);
    merges.push(...local);
  }
  // Stable: equal scores keep the order above.
  merges.sort((a, b) => b.score - a.score);
  return merges.map((m) => [m.left, m.right]);
}

/** Reads the `tokenizer.ggml.*` keys of a GGUF file into Hugging Face tokenizer files; `path` names the file in errors. */
export function tokenizerFilesOf(metadata: ReadonlyMap<string, GgufValue>, path: string, context: number): TokenizerFiles {
  const get = (key: string) => metadata.get(`tokenizer.ggml.${key}`)?.value;
  const list = <T>(key: string): T[] | undefined => {
    const v = metadata.get(`tokenizer.ggml.${key}`);
    return v?.type === 'array' ? (v.value as T[]) : undefined;
  };
  const model = get('model');
  const tokens = list<string>('tokens');
  if (typeof model !== 'string' || !tokens) throw new InputError(`${path}: no tokenizer (tokenizer.ggml.model and tokens are missing)`);
  const n = tokens.length;
  const types = list<number>('token_type')?.map(Number) ?? new Array(n).fill(TOKEN_TYPE.normal);
  if (types.length !== n) throw new InputError(`${path}: tokenizer.ggml.token_type has ${types.length} entries for ${n} tokens`);
  const id = (key: string): number | null => {
    const v = get(`${key}_token_id`);
    if (v === undefined) return null;
    const i = Number(v);
    if (!Number.isInteger(i) || i < 0 || i >= n)
      throw new InputError(`${path}: tokenizer.ggml.${key}_token_id ${i} is not a token id (0..${n - 1})`);
    return i;
  };
  const bos = id('bos');
  const eos = id('eos');
  const unk = id('unknown');
  const pad = id('padding');
  const addBos = (get('add_bos_token') as boolean | undefined) ?? model === 'llama';
  const addEos = (get('add_eos_token') as boolean | undefined) ?? false;

  const added = tokens.flatMap((content, i) =>
    types[i] === TOKEN_TYPE.control || types[i] === TOKEN_TYPE.userDefined || types[i] === TOKEN_TYPE.unknown
      ? [
          {
            id: i,
            content,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: types[i] !== TOKEN_TYPE.userDefined,
          },
        ]
      : [],
  );
  const vocab: Json = {};
  tokens.forEach((t, i) => {
    if (!(t in vocab)) vocab[t] = i;
  });
  const template = (bosToo: boolean, eosToo: boolean): Json | null => {
    if ((!bosToo || bos === null) && (!eosToo || eos === null)) return null;
    const special = (i: number) => ({ SpecialToken: { id: tokens[i]!, type_id: 0 } });
    const single = [...(bosToo && bos !== null ? [special(bos)] : []), { Sequence: { id: 'A', type_id: 0 } }];
    if (eosToo && eos !== null) single.push(special(eos));
    const specials: Json = {};
    for (const i of [bosToo ? bos : null, eosToo ? eos : null])
      if (i !== null) specials[tokens[i]!] = { id: tokens[i]!, ids: [i], tokens: [tokens[i]!] };
    return { type: 'TemplateProcessing', single, pair: [...single, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: specials };
  };

  let tokenizer: Json;
  if (model === 'gpt2') {
    const pre = String(get('pre') ?? 'default');
    const preTokenizer = byteLevelPreTokenizer(pre);
    if (!preTokenizer) {
      throw new InputError(
        `${path}: tokenizer.ggml.pre "${pre}" is a pre-tokenizer llmopt cannot rebuild ` +
          `(it knows gpt-2, smollm, ${Object.keys(PRE_TOKENIZER_REGEXES).join(', ')})`,
      );
    }
    const merges = list<string>('merges');
    if (!merges) throw new InputError(`${path}: a gpt2 tokenizer without tokenizer.ggml.merges`);
    tokenizer = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: preTokenizer,
      post_processor: template(addBos, addEos) ?? { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: BYTE_LEVEL_DECODER,
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: '',
        end_of_word_suffix: '',
        fuse_unk: false,
        byte_fallback: false,
        // llama.cpp's llama-bpe pre-tokenizer takes whole vocabulary words before merging, as Llama 3's tokenizer.json.
        ignore_merges: pre === 'llama-bpe',
        vocab,
        merges: merges.map((m) => m.split(' ')),
      },
    };
  } else if (model === 'llama') {
    const scores = list<number>('scores')?.map(Number);
    if (!scores || scores.length !== n) throw new InputError(`${path}: a llama tokenizer needs tokenizer.ggml.scores, one per token`);
    const spacePrefix = (metadata.get('tokenizer.ggml.add_space_prefix')?.value as boolean | undefined) ?? true;
    const replace = { type: 'Replace', pattern: { String: ' ' }, content: WORD_START };
    tokenizer = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: spacePrefix ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: WORD_START }, replace] } : replace,
      pre_tokenizer: null,
      post_processor: template(addBos, addEos),
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: WORD_START }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          ...(spacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
        ],
      },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: unk === null ? null : tokens[unk]!,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        ignore_merges: false,
        vocab,
        merges: mergesFromScores(tokens, scores, types),
      },
    };
  } else {
    throw new InputError(`${path}: tokenizer.ggml.model "${model}" is not supported (llmopt reads llama and gpt2 tokenizers)`);
  }
  const name = (i: number | null) => (i === null ? null : tokens[i]!);
  const chat = metadata.get('tokenizer.chat_template')?.value;
  const tokenizerConfig: Json = {
    add_bos_token: addBos,
    add_eos_token: addEos,
    bos_token: name(bos),
    eos_token: name(eos),
    unk_token: name(unk),
    pad_token: name(pad),
    clean_up_tokenization_spaces: false,
    model_max_length: context,
    ...(typeof chat === 'string' ? { chat_template: chat } : {}),
  };
  return { tokenizer, tokenizerConfig, bos, eos, pad };
}
