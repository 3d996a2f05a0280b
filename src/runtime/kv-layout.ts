// What every KV cache kind shares: the layout of a model's cache inputs, the feeds of a step, and the plan for
// sliding layers whose caches hold only their window (graphs that take attention_mask_local, see core/io.ts).
import { io } from '../core/io.js';
import { Tensor } from './session.js';
import type { SequenceState } from './model.js';

/** What one forward step feeds besides input_ids. */
export interface StepFeeds {
  feeds: Record<string, Tensor>;
  fetches?: Record<string, Tensor | null>;
}

export interface KvCache extends SequenceState {
  /** Feeds for a step appending newCounts[b] tokens to row b, padded to S. */
  prepare(newCounts: number[], S: number): StepFeeds;
  /** Records a finished step. */
  commit(outputs: Record<string, Tensor>, newCounts: number[]): void;
  /** The cache tensors held now, by input name (what the next step feeds, before it trims or grows them). */
  held(): ReadonlyMap<string, Tensor>;
}

/**
 * Sliding layers whose caches are trimmed to their window. A query at position p sees keys in (p - window, p], so the
 * next token needs the window - 1 before it: each row keeps that many (plus `rollback`) of its latest entries, dropped
 * from the front before a step. Older keys are masked out anyway, so the logits are those of the whole cache.
 */
export interface WindowPlan {
  /** Their past input names (past_key_values.* or kv_cache.*). */
  names: string[];
  /** window - 1: the entries a row needs for its next token. */
  needed: number;
  /**
   * Tokens a row may be truncated by below its last step's start (a speculative draft rolls back proposals it made
   * one step each); the trimmed caches keep as many more entries.
   */
  rollback: number;
}

export interface CacheLayout {
  batch: number;
  kvHeads: number;
  headDim: number;
  /** past_key_values.* input names, in graph order. */
  pastNames: string[];
  /** present.* output name for each past name. */
  presentOf: (past: string) => string;
  /** Whether the graph takes position_ids. */
  positionIds: boolean;
  maxPositions: number;
  /**
   * Whether the device takes zero-sized cache inputs. onnxruntime 1.30's WebGPU provider crashes the
   * process (SIGSEGV) on the inplace graph's zero-slot kv_cache.*; there the first prefill reads C
   * masked-out slots instead.
   */
  emptyInputs?: boolean;
  /** The graph's trimmed sliding layers, or absent: every cache holds the whole context. */
  window?: WindowPlan;
}

/** The past names that hold the whole context (all but the window plan's). */
export function wholeNames(layout: CacheLayout): string[] {
  const local = new Set(layout.window?.names ?? []);
  return layout.pastNames.filter((n) => !local.has(n));
}

/** How many entries a trimmed row may keep after truncation to `length` tokens, dropping `drop` of `held`; throws below need. */
export function heldAfterTruncate(plan: WindowPlan, row: number, held: number, drop: number, length: number): number {
  const left = Math.max(0, held - drop);
  if (left < Math.min(length, plan.needed)) {
    throw new Error(
      `truncate: row ${row} of a sliding-window cache keeps ${held} entries; rolling back ${drop} tokens leaves ${left}, ` +
        `short of the ${Math.min(length, plan.needed)} its window needs (create the cache with a larger rollback)`,
    );
  }
  return left;
}

export function int64(values: number[] | BigInt64Array, dims: number[]): Tensor {
  const data = values instanceof BigInt64Array ? values : BigInt64Array.from(values, (v) => BigInt(v));
  return new Tensor('int64', data, dims);
}

/** position_ids [B, S] for rows holding `lengths` tokens, where the graph takes them. */
export function positionFeeds(layout: CacheLayout, lengths: readonly number[], S: number): Record<string, Tensor> {
  if (!layout.positionIds) return {};
  const pos = new BigInt64Array(layout.batch * S);
  for (let b = 0; b < layout.batch; b++) {
    // Padding slots get a clamped position: their outputs are never read.
    for (let s = 0; s < S; s++) pos[b * S + s] = BigInt(Math.min(lengths[b]! + s, layout.maxPositions - 1));
  }
  return { [io.positionIds]: int64(pos, [layout.batch, S]) };
}
