// KV caches for the attention forms. All lay rows out right-padded: row b's tokens occupy
// cache slots 0..length[b]-1 (GroupQueryAttention requires right padding).
//   SharedBufferCache (fused): one [B, kvH, slots, D] buffer per past input, fed as the past and
//     pre-allocated as the present, so GroupQueryAttention appends in place (but onnxruntime-node
//     still copies every present back into a new JavaScript buffer after the run).
//   InPlaceCache (inplace): the graph reads the buffers and returns only the new entries; written here.
//   ConcatCache (standard, kv-concat.ts): the graph returns past+new; the present becomes the next past.
// Sliding layers of a graph that takes attention_mask_local keep only their window (kv-layout.ts WindowPlan): their
// buffers are a second group with its own per-row counts and mask, trimmed before each step.
import { io, type AttentionForm } from '../core/io.js';
import { ConcatCache } from './kv-concat.js';
import { heldAfterTruncate, int64, positionFeeds, wholeNames, type CacheLayout, type KvCache, type StepFeeds } from './kv-layout.js';
import { SlotBuffers } from './kv-slots.js';
import type { Tensor } from './session.js';
import type { SequenceState } from './model.js';

export type { CacheLayout, KvCache, StepFeeds, WindowPlan } from './kv-layout.js';
export { ConcatCache } from './kv-concat.js';

/** What the two slot-buffer caches share: per-row lengths over growable buffers, rollback, row adoption. */
abstract class SlotCache implements KvCache {
  readonly lengths: number[];
  /** The caches of layers that hold the whole context. */
  protected readonly slots: SlotBuffers;
  /** Trimmed sliding layers' caches, and the entries each row holds there (its latest tokens), or null. */
  protected readonly local: SlotBuffers | null;
  protected readonly localHeld: number[];

  constructor(
    readonly layout: CacheLayout,
    maxCapacity: number,
    slotsLast: (name: string) => boolean = () => false,
  ) {
    this.lengths = new Array(layout.batch).fill(0);
    this.localHeld = new Array(layout.batch).fill(0);
    this.slots = new SlotBuffers(layout, wholeNames(layout), maxCapacity, slotsLast);
    const w = layout.window;
    // A decode step's width: the kept entries and the new token.
    this.local = w ? new SlotBuffers(layout, w.names, maxCapacity, slotsLast, w.needed + w.rollback + 1) : null;
  }

  get batch(): number {
    return this.layout.batch;
  }

  abstract prepare(newCounts: number[], S: number): StepFeeds;
  abstract commit(outputs: Record<string, Tensor>, newCounts: number[]): void;

  held(): ReadonlyMap<string, Tensor> {
    return new Map([...this.slots.tensors, ...(this.local?.tensors ?? [])]);
  }

  /**
   * Trimmed rows drop their oldest entries down to what the window (and rollback) needs, then the buffers take the
   * step: returns the sliding layers' width (the widest row's kept entries and new tokens).
   */
  protected trimLocal(newCounts: number[]): number {
    const plan = this.layout.window!;
    const keep = plan.needed + plan.rollback;
    for (let b = 0; b < this.batch; b++) {
      const held = this.localHeld[b]!;
      if (held <= keep) continue;
      this.local!.shift(b, held - keep, keep);
      this.localHeld[b] = keep;
    }
    const width = Math.max(...this.localHeld.map((l, b) => l + newCounts[b]!));
    this.local!.fit(width);
    this.local!.ensure(width);
    return width;
  }

  /** Slots past `length` are simply overwritten by later steps: nothing to move. */
  truncate(row: number, length: number): void {
    if (length > this.lengths[row]!) throw new Error(`truncate: row ${row} holds ${this.lengths[row]} tokens, not ${length}`);
    if (this.layout.window) {
      const drop = this.lengths[row]! - length;
      this.localHeld[row] = heldAfterTruncate(this.layout.window, row, this.localHeld[row]!, drop, length);
    }
    this.lengths[row] = length;
  }

  /**
   * Makes `row` hold what row `from` of `source` holds (its keys and values, copied): how continuous
   * batching moves a request prefilled alone at batch 1 into a decode slot of the running batch.
   */
  adoptRow(row: number, source: SequenceState, from = 0): void {
    const same = source instanceof this.constructor && source instanceof SlotCache;
    if (!same || source.layout.kvHeads !== this.layout.kvHeads || source.layout.headDim !== this.layout.headDim) {
      throw new Error('adoptRow: the source must be a cache of the same kind and model');
    }
    const n = source.lengths[from]!;
    this.slots.ensure(Math.max(n, 1));
    this.slots.copyRow(row, source.slots, from, n);
    this.lengths[row] = n;
    if (this.local && source.local) {
      const held = source.localHeld[from]!;
      this.local.ensure(Math.max(held, 1));
      this.local.copyRow(row, source.local, from, held);
      this.localHeld[row] = held;
    }
  }

  release(): void {
    this.slots.release();
    this.local?.release();
  }
}

/** fused form: each buffer is fed as the past and pre-allocated as the present; GroupQueryAttention appends in place. */
export class SharedBufferCache extends SlotCache {
  prepare(newCounts: number[], S: number): StepFeeds {
    const B = this.batch;
    const totals = this.lengths.map((l, b) => l + newCounts[b]!);
    const width = Math.max(...totals);
    this.slots.ensure(width);
    const hasPast = this.lengths.some((l) => l > 0);
    if (hasPast && S > 1 && B > 1) throw new Error('GroupQueryAttention appends several tokens to a non-empty cache only at batch 1');
    const mask = new BigInt64Array(B * width);
    for (let b = 0; b < B; b++) mask.fill(1n, b * width, b * width + totals[b]!);
    const feeds: Record<string, Tensor> = { [io.attentionMask]: int64(mask, [B, width]), ...positionFeeds(this.layout, this.lengths, S) };
    const fetches: Record<string, Tensor | null> = {};
    const buffers = [...this.slots.tensors];
    if (this.local) {
      // The sliding layers' seqlens_k and total_sequence_length come from their own mask, over their own buffers.
      const localWidth = this.trimLocal(newCounts);
      const localMask = new BigInt64Array(B * localWidth);
      for (let b = 0; b < B; b++) localMask.fill(1n, b * localWidth, b * localWidth + this.localHeld[b]! + newCounts[b]!);
      feeds[io.attentionMaskLocal] = int64(localMask, [B, localWidth]);
      buffers.push(...this.local.tensors);
    }
    for (const [name, t] of buffers) {
      feeds[name] = t;
      fetches[this.layout.presentOf(name)] = t;
    }
    return { feeds, fetches };
  }

  commit(_outputs: Record<string, Tensor>, newCounts: number[]): void {
    for (let b = 0; b < this.batch; b++) {
      this.lengths[b]! += newCounts[b]!;
      this.localHeld[b]! += newCounts[b]!;
    }
  }
}

/**
 * inplace form: the graph reads the buffers (keys [B, kvH, D, C], values [B, kvH, C, D]) and returns
 * only the step's new keys/values, which are written here. The attention mask covers the C slots and
 * then the S new tokens. Unlike GroupQueryAttention, any row may append several tokens at any batch.
 */
export class InPlaceCache extends SlotCache {
  constructor(layout: CacheLayout, maxCapacity: number) {
    // The inplace graph reads keys transposed, [B, kvH, D, C].
    super(layout, maxCapacity, (name) => name.endsWith('.key'));
  }

  prepare(newCounts: number[], S: number): StepFeeds {
    this.slots.ensure(Math.max(...this.lengths.map((l, b) => l + newCounts[b]!)));
    const feeds: Record<string, Tensor> = {
      ...this.slotFeeds(this.slots, this.lengths, io.attentionMask, newCounts, S),
      ...positionFeeds(this.layout, this.lengths, S),
    };
    if (this.local) {
      this.trimLocal(newCounts);
      Object.assign(feeds, this.slotFeeds(this.local, this.localHeld, io.attentionMaskLocal, newCounts, S));
    }
    return { feeds };
  }

  /** The buffers of one group and its mask [B, C + S]: `held` slots of each row, then its new tokens. */
  private slotFeeds(slots: SlotBuffers, held: number[], maskName: string, newCounts: number[], S: number): Record<string, Tensor> {
    const B = this.batch;
    // A prefill into an empty cache attends to no slot: the graph gets zero slots rather than C masked ones.
    const empty = this.layout.emptyInputs !== false && held.every((l) => l === 0);
    const C = empty ? 0 : slots.allocated;
    const T = C + S;
    const mask = new BigInt64Array(B * T);
    for (let b = 0; b < B; b++) {
      mask.fill(1n, b * T, b * T + held[b]!);
      mask.fill(1n, b * T + C, b * T + C + newCounts[b]!);
    }
    const feeds: Record<string, Tensor> = { [maskName]: int64(mask, [B, T]) };
    for (const [name, t] of slots.tensors) feeds[name] = empty ? slots.noSlots(name) : t;
    return feeds;
  }

  commit(outputs: Record<string, Tensor>, newCounts: number[]): void {
    const groups: [SlotBuffers, number[]][] = [[this.slots, this.lengths]];
    if (this.local) groups.push([this.local, this.localHeld]);
    for (const [slots, held] of groups) {
      for (const name of slots.tensors.keys()) {
        const fresh = outputs[this.layout.presentOf(name)]!; // [B, kvH, S, D]
        for (let b = 0; b < this.batch; b++)
          slots.writeEntries(name, b, held[b]!, fresh.data as Float32Array, fresh.dims[2]!, newCounts[b]!);
      }
    }
    for (let b = 0; b < this.batch; b++) {
      this.lengths[b]! += newCounts[b]!;
      this.localHeld[b]! += newCounts[b]!;
    }
  }
}

export type CacheKind = 'shared' | 'concat' | 'inplace';

/** Which kinds of cache take over rows of one another (continuous batching): the slot-buffer ones. */
export const CACHE_ADOPTS_ROWS: Readonly<Record<CacheKind, boolean>> = { shared: true, inplace: true, concat: false };

/** The cache a graph of attention form `form` runs with by default. */
export function defaultCacheKind(form: AttentionForm): CacheKind {
  return form === 'fused' ? 'shared' : form === 'inplace' ? 'inplace' : 'concat';
}

/** A fresh cache of `kind`; `maxCapacity` bounds the tokens a row may hold (the buffer kinds grow up to it). */
export function createKvCache(kind: CacheKind, layout: CacheLayout, maxCapacity: number): KvCache {
  return kind === 'shared'
    ? new SharedBufferCache(layout, maxCapacity)
    : kind === 'inplace'
      ? new InPlaceCache(layout, maxCapacity)
      : new ConcatCache(layout);
}
