// Shard planning: validates --tp / --pp / --stages against a model's shape and decides which layers,
// heads, MLP columns and vocabulary rows every rank holds. Ranks are numbered as TensorRT-LLM does:
// rank = stage * tp + tpRank.
import { InputError } from '../../core/errors.js';
import { expectedTensors, EMBED_TOKENS, FINAL_NORM, LM_HEAD, type DecoderSpec } from '../../core/spec.js';

export const VOCAB_MODES = ['replicated', 'split'] as const;
/** replicated: every rank of the first (last) stage holds the whole embedding (lm_head); split: rows divided over tp. */
export type VocabMode = (typeof VOCAB_MODES)[number];

/** KV heads under tensor parallelism: divided when kv_heads % tp == 0, else one per rank, replicated (tp % kv_heads == 0). */
export type KvMode = 'split' | 'replicated';

export interface ShardPlanOptions {
  tp: number;
  /** Pipeline stages (default 1, or the count of `stages`). */
  pp?: number;
  /** Explicit layer ranges per stage, e.g. "0-5,6-11"; default: balanced by parameter bytes. */
  stages?: string;
  vocab: VocabMode;
}

/** Half-open index range [from, to). */
export interface Range {
  from: number;
  to: number;
}

export interface RankPlan {
  rank: number;
  stage: number;
  tpRank: number;
  layers: Range;
  /** Query heads, KV heads, MLP columns and vocabulary rows this rank holds. */
  heads: Range;
  kvHeads: Range;
  ffn: Range;
  vocab: Range;
  embedding: boolean;
  head: boolean;
}

export interface ShardPlan {
  tp: number;
  pp: number;
  worldSize: number;
  stages: Range[];
  kv: KvMode;
  vocab: VocabMode;
  ranks: RankPlan[];
}

/** Parses "0-5,6-11" (a single number is a one-layer stage) and checks the ranges tile [0, layers). */
export function parseStages(text: string, numLayers: number): Range[] {
  const ranges = text.split(',').map((part) => {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw new InputError(`--stages ${text}: "${part}" is not a layer range like 0-5`);
    const from = Number(m[1]);
    const last = m[2] === undefined ? from : Number(m[2]);
    if (last < from) throw new InputError(`--stages ${text}: range ${part.trim()} ends before it starts`);
    if (last >= numLayers) throw new InputError(`--stages ${text}: layer ${last} does not exist (the model has layers 0-${numLayers - 1})`);
    return { from, to: last + 1 };
  });
  let next = 0;
  for (const r of ranges) {
    if (r.from < next)
      throw new InputError(`--stages ${text}: stages overlap at layer ${r.from} (each layer belongs to exactly one stage, in order)`);
    if (r.from > next)
      throw new InputError(
        `--stages ${text}: layers ${next}-${r.from - 1} are in no stage (stages must cover 0-${numLayers - 1} without gaps)`,
      );
    next = r.to;
  }
  if (next < numLayers)
    throw new InputError(`--stages ${text}: layers ${next}-${numLayers - 1} are in no stage (stages must cover 0-${numLayers - 1})`);
  return ranges;
}

/** Parameter count of one layer, of what the first stage adds (embedding) and of what the last adds (norm, lm_head). */
function parameterWeights(spec: DecoderSpec): { layer: number; first: number; last: number } {
  const size = (name: string) => (expectedTensors(spec).get(name) ?? []).reduce((a, b) => a * b, 1);
  let layer = 0;
  for (const [name, shape] of expectedTensors(spec)) if (name.startsWith('model.layers.0.')) layer += shape.reduce((a, b) => a * b, 1);
  // A tied lm_head is stored again by the last stage.
  const head = size(FINAL_NORM) + (spec.tiedEmbeddings ? size(EMBED_TOKENS) : size(LM_HEAD));
  return { layer, first: size(EMBED_TOKENS), last: head };
}

/**
 * Contiguous layer ranges for `pp` stages that minimise the largest stage's parameter bytes, the
 * first stage carrying the embedding and the last the lm_head (exact, by dynamic programming).
 */
export function balanceStages(spec: DecoderSpec, pp: number): Range[] {
  const L = spec.numLayers;
  const w = parameterWeights(spec);
  const cost = (s: number, from: number, to: number) => (to - from) * w.layer + (s === 0 ? w.first : 0) + (s === pp - 1 ? w.last : 0);
  // best[s][j]: smallest max cost placing layers [0, j) into stages 0..s; cut[s][j] where stage s starts.
  const best = Array.from({ length: pp }, () => new Array<number>(L + 1).fill(Infinity));
  const cut = Array.from({ length: pp }, () => new Array<number>(L + 1).fill(0));
  for (let j = 1; j <= L; j++) best[0]![j] = cost(0, 0, j);
  for (let s = 1; s < pp; s++) {
    for (let j = s + 1; j <= L; j++) {
      for (let i = s; i < j; i++) {
        const c = Math.max(best[s - 1]![i]!, cost(s, i, j));
        if (c < best[s]![j]!) {
          best[s]![j] = c;
          cut[s]![j] = i;
        }
      }
    }
  }
  const ranges: Range[] = [];
  let to = L;
  for (let s = pp - 1; s >= 0; s--) {
    const from = s === 0 ? 0 : cut[s]![to]!;
    ranges.unshift({ from, to });
    to = from;
  }
  return ranges;
}

/** Validates the options against the model and lays out every rank; throws InputError naming the option. */
export function planShard(spec: DecoderSpec, opts: ShardPlanOptions): ShardPlan {
  const { tp, vocab } = opts;
  const H = spec.numHeads;
  const KV = spec.kvHeads;
  const F = spec.intermediateSize;
  const V = spec.vocabSize;
  if (!Number.isInteger(tp) || tp < 1) throw new InputError(`--tp ${tp}: expected an integer >= 1`);
  if (H % tp !== 0) throw new InputError(`--tp ${tp} does not divide the ${H} attention heads (choose a divisor of ${H})`);
  if (F % tp !== 0) throw new InputError(`--tp ${tp} does not divide the intermediate size ${F} (choose a divisor of ${F})`);
  let kv: KvMode;
  if (KV % tp === 0) kv = 'split';
  else if (tp % KV === 0) kv = 'replicated';
  else
    throw new InputError(
      `--tp ${tp}: the ${KV} key/value heads can neither be divided by it nor replicated across it ` +
        `(tp must divide ${KV} or be a multiple of it)`,
    );
  if (vocab === 'split' && V % tp !== 0)
    throw new InputError(`--vocab split: --tp ${tp} does not divide the vocabulary of ${V} (use --vocab replicated)`);

  const stages = opts.stages !== undefined ? parseStages(opts.stages, spec.numLayers) : null;
  const pp = opts.pp ?? stages?.length ?? 1;
  if (!Number.isInteger(pp) || pp < 1) throw new InputError(`--pp ${pp}: expected an integer >= 1`);
  if (pp > spec.numLayers)
    throw new InputError(`--pp ${pp} is larger than the model's ${spec.numLayers} layers (each stage needs at least one)`);
  if (stages && stages.length !== pp) throw new InputError(`--stages ${opts.stages}: ${stages.length} stages, but --pp is ${pp}`);
  const ranges = stages ?? balanceStages(spec, pp);

  const Hl = H / tp;
  const Fl = F / tp;
  const Vl = vocab === 'split' ? V / tp : V;
  const ranks: RankPlan[] = [];
  for (let stage = 0; stage < pp; stage++) {
    for (let tpRank = 0; tpRank < tp; tpRank++) {
      // Replicated KV: the rank's query heads all fall in one KV group (tp is a multiple of kv_heads).
      const kvHeads =
        kv === 'split'
          ? { from: (tpRank * KV) / tp, to: ((tpRank + 1) * KV) / tp }
          : { from: Math.floor((tpRank * KV) / tp), to: Math.floor((tpRank * KV) / tp) + 1 };
      ranks.push({
        rank: stage * tp + tpRank,
        stage,
        tpRank,
        layers: ranges[stage]!,
        heads: { from: tpRank * Hl, to: (tpRank + 1) * Hl },
        kvHeads,
        ffn: { from: tpRank * Fl, to: (tpRank + 1) * Fl },
        vocab: vocab === 'split' ? { from: tpRank * Vl, to: (tpRank + 1) * Vl } : { from: 0, to: V },
        embedding: stage === 0,
        head: stage === pp - 1,
      });
    }
  }
  return { tp, pp, worldSize: tp * pp, stages: ranges, kv, vocab, ranks };
}

/** The spec one rank's graphs are built from: its own head, column and vocabulary counts. */
export function rankSpec(spec: DecoderSpec, r: RankPlan): DecoderSpec {
  return {
    ...spec,
    numHeads: r.heads.to - r.heads.from,
    kvHeads: r.kvHeads.to - r.kvHeads.from,
    intermediateSize: r.ffn.to - r.ffn.from,
    vocabSize: r.vocab.to - r.vocab.from,
  };
}
