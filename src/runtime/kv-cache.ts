// KV caches for the two attention forms. Both lay rows out right-padded: row b's tokens occupy
// cache slots 0..length[b]-1 (GroupQueryAttention requires right padding).
//   SharedBufferCache (fused): one [B, kvH, slots, D] buffer per past input, fed as the past and
//     pre-allocated as the present, so GroupQueryAttention appends in place and nothing is copied.
//   ConcatCache (standard): the graph returns past+new; the present becomes the next past.
import { InputError } from '../errors.js';
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
}

function int64(values: number[] | BigInt64Array, dims: number[]): Tensor {
  const data = values instanceof BigInt64Array ? values : BigInt64Array.from(values, (v) => BigInt(v));
  return new Tensor('int64', data, dims);
}

function positionFeeds(layout: CacheLayout, lengths: readonly number[], S: number): Record<string, Tensor> {
  if (!layout.positionIds) return {};
  const pos = new BigInt64Array(layout.batch * S);
  for (let b = 0; b < layout.batch; b++) {
    // Padding slots get a clamped position: their outputs are never read.
    for (let s = 0; s < S; s++) pos[b * S + s] = BigInt(Math.min(lengths[b]! + s, layout.maxPositions - 1));
  }
  return { position_ids: int64(pos, [layout.batch, S]) };
}

export class SharedBufferCache implements KvCache {
  readonly lengths: number[];
  private buffers = new Map<string, Tensor>();
  /** Sequence slots the buffers hold now; they grow on demand up to `maxCapacity`. */
  private allocated = 0;

  constructor(readonly layout: CacheLayout, readonly maxCapacity: number) {
    this.lengths = new Array(layout.batch).fill(0);
  }

  /**
   * Makes the buffers hold at least `width` slots. A step's time grows with the allocated slots
   * (measured at batch 8: 33 ms with 140 slots, 125 ms with 1,800), so the buffers start near the
   * prompt and grow by half (amortised copies) rather than being sized for the longest possible run.
   */
  private ensure(width: number): void {
    if (width <= this.allocated) return;
    if (width > this.maxCapacity) throw new InputError(`sequence of ${width} tokens exceeds the cache capacity of ${this.maxCapacity}`);
    const next = Math.min(this.maxCapacity, Math.max(width + 64, Math.ceil(this.allocated * 1.5)));
    const { batch: B, kvHeads: H, headDim: D } = this.layout;
    for (const name of this.layout.pastNames) {
      const grown = new Float32Array(B * H * next * D); // [B, H, next, D]
      const old = this.buffers.get(name)?.data as Float32Array | undefined; // [B, H, allocated, D]
      if (old) for (let bh = 0; bh < B * H; bh++) grown.set(old.subarray(bh * this.allocated * D, (bh + 1) * this.allocated * D), bh * next * D);
      this.buffers.set(name, new Tensor('float32', grown, [B, H, next, D]));
    }
    this.allocated = next;
  }

  get batch(): number {
    return this.layout.batch;
  }

  prepare(newCounts: number[], S: number): StepFeeds {
    const B = this.batch;
    const totals = this.lengths.map((l, b) => l + newCounts[b]!);
    const width = Math.max(...totals);
    this.ensure(width);
    const hasPast = this.lengths.some((l) => l > 0);
    if (hasPast && S > 1 && B > 1) throw new Error('GroupQueryAttention appends several tokens to a non-empty cache only at batch 1');
    const mask = new BigInt64Array(B * width);
    for (let b = 0; b < B; b++) mask.fill(1n, b * width, b * width + totals[b]!);
    const feeds: Record<string, Tensor> = { attention_mask: int64(mask, [B, width]), ...positionFeeds(this.layout, this.lengths, S) };
    const fetches: Record<string, Tensor | null> = {};
    for (const [name, t] of this.buffers) {
      feeds[name] = t;
      fetches[this.layout.presentOf(name)] = t;
    }
    return { feeds, fetches };
  }

  commit(_outputs: Record<string, Tensor>, newCounts: number[]): void {
    for (let b = 0; b < this.batch; b++) this.lengths[b]! += newCounts[b]!;
  }

  /** Slots past `length` are simply overwritten by later steps: nothing to move. */
  truncate(row: number, length: number): void {
    if (length > this.lengths[row]!) throw new Error(`truncate: row ${row} holds ${this.lengths[row]} tokens, not ${length}`);
    this.lengths[row] = length;
  }

  /**
   * Makes `row` hold what row `from` of `source` holds (its keys and values, copied): how continuous
   * batching moves a request prefilled alone at batch 1 into a decode slot of the running batch.
   */
  adoptRow(row: number, source: SequenceState, from = 0): void {
    if (!(source instanceof SharedBufferCache) || source.layout.kvHeads !== this.layout.kvHeads || source.layout.headDim !== this.layout.headDim) {
      throw new Error('adoptRow: the source must be a shared-buffer cache of the same model');
    }
    const n = source.lengths[from]!;
    this.ensure(Math.max(n, 1));
    const { kvHeads: H, headDim: D } = this.layout;
    for (const [name, t] of this.buffers) {
      const src = source.buffers.get(name)!.data as Float32Array; // [B', H, allocated', D]
      const dst = t.data as Float32Array; // [B, H, allocated, D]
      for (let h = 0; h < H; h++) {
        const s = (from * H + h) * source.allocated * D;
        dst.set(src.subarray(s, s + n * D), (row * H + h) * this.allocated * D);
      }
    }
    this.lengths[row] = n;
  }
}

export class ConcatCache implements KvCache {
  readonly lengths: number[];
  private past: Map<string, Tensor>;
  /** Per slot and row: 1 where the slot holds a real token, 0 for padding. */
  private valid: Uint8Array[];

  constructor(readonly layout: CacheLayout) {
    this.lengths = new Array(layout.batch).fill(0);
    const dims = [layout.batch, layout.kvHeads, 0, layout.headDim];
    this.past = new Map(layout.pastNames.map((n) => [n, new Tensor('float32', new Float32Array(0), dims)]));
    this.valid = Array.from({ length: layout.batch }, () => new Uint8Array(0));
  }

  get batch(): number {
    return this.layout.batch;
  }

  prepare(newCounts: number[], S: number): StepFeeds {
    const B = this.batch;
    const T = this.valid[0]!.length + S;
    const mask = new BigInt64Array(B * T);
    for (let b = 0; b < B; b++) {
      const v = this.valid[b]!;
      for (let t = 0; t < v.length; t++) mask[b * T + t] = BigInt(v[t]!);
      for (let s = 0; s < S; s++) mask[b * T + v.length + s] = s < newCounts[b]! ? 1n : 0n;
    }
    const feeds: Record<string, Tensor> = { attention_mask: int64(mask, [B, T]), ...positionFeeds(this.layout, this.lengths, S) };
    for (const [name, t] of this.past) feeds[name] = t;
    return { feeds };
  }

  /**
   * Marks row's slots after its first `length` tokens as padding. At batch 1 the cache is cut to
   * that length (no padding left behind); with more rows the slots stay, masked out.
   */
  truncate(row: number, length: number): void {
    const valid = this.valid[row]!;
    let kept = 0;
    for (let t = 0; t < valid.length; t++) {
      if (!valid[t]) continue;
      if (kept >= length) valid[t] = 0;
      else kept++;
    }
    if (kept < length) throw new Error(`truncate: row ${row} holds ${kept} tokens, not ${length}`);
    this.lengths[row] = length;
    if (this.batch === 1) {
      const T = length;
      for (const [name, t] of this.past) {
        const [B, H, oldT, D] = t.dims as [number, number, number, number];
        const src = t.data as Float32Array;
        const out = new Float32Array(B * H * T * D);
        for (let h = 0; h < B * H; h++) out.set(src.subarray(h * oldT * D, h * oldT * D + T * D), h * T * D);
        this.past.set(name, new Tensor('float32', out, [B, H, T, D]));
      }
      this.valid[0] = this.valid[0]!.slice(0, T);
    }
  }

  commit(outputs: Record<string, Tensor>, newCounts: number[]): void {
    const S = Math.max(...newCounts);
    for (const name of this.past.keys()) this.past.set(name, outputs[this.layout.presentOf(name)]!);
    for (let b = 0; b < this.batch; b++) {
      const old = this.valid[b]!;
      const next = new Uint8Array(old.length + S);
      next.set(old);
      next.fill(1, old.length, old.length + newCounts[b]!);
      this.valid[b] = next;
      this.lengths[b]! += newCounts[b]!;
    }
  }
}
