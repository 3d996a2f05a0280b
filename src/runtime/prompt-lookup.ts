// Prompt-lookup drafting (Saxena 2023; transformers' prompt_lookup_num_tokens, vLLM's n-gram proposer): no draft
// model; the last n tokens of the text so far are looked up earlier in it (prompt included), and the tokens that
// followed the latest match are proposed. Pays off where the output repeats its input: edits, summaries, code, RAG.

/** What `--draft` takes to draft by prompt lookup instead of with a draft artifact. */
export const PROMPT_LOOKUP = 'prompt-lookup';

export interface PromptLookupOptions {
  /** Longest n-gram matched first (default 3); shorter ones are tried down to minNgram. */
  maxNgram?: number;
  /** Shortest n-gram worth matching (default 1). */
  minNgram?: number;
}

/**
 * Up to `k` proposed continuations of `seq`: for n from maxNgram down to minNgram, the tokens after the latest earlier
 * occurrence of seq's last n tokens; none when no n-gram recurs.
 */
export function lookupProposals(seq: readonly number[], k: number, o: PromptLookupOptions = {}): number[] {
  const maxNgram = o.maxNgram ?? 3;
  const minNgram = o.minNgram ?? 1;
  const end = seq.length;
  for (let n = Math.min(maxNgram, end - 1); n >= minNgram; n--) {
    // Latest match first: the most recent context is the likeliest to continue the same way.
    for (let start = end - n - 1; start >= 0; start--) {
      let j = 0;
      while (j < n && seq[start + j] === seq[end - n + j]) j++;
      if (j === n) return seq.slice(start + n, Math.min(start + n + k, end)) as number[];
    }
  }
  return [];
}
