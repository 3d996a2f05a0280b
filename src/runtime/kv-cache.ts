// KV caches for the attention forms. All lay rows out right-padded: row b's tokens occupy
// cache slots 0..length[b]-1 (GroupQueryAttention requires right padding).
//   SharedBufferCache (fused): one [B, kvH, slots, D] buffer per past input, fed as the past and
//     pre-allocated as the present, so GroupQueryAttention appends in place (but onnxruntime-node
//     still copies every present back into a new JavaScript buffer after the run).
//   InPlaceCache (inplace): the graph reads the buffers and returns only the new entries; written here.
//   ConcatCache (standard): the graph returns past+new; the present becomes the next past.
import { InputError } from '../core/errors.js';
import { io, type AttentionForm } from '../core/io.js';
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
  /**
   * Whether the device takes zero-sized cache inputs. onnxruntime 1.30's WebGPU provider crashes the
   * process (SIGSEGV) on the inplace graph's zero-slot kv_cache.*; there the first prefill reads C
   * masked-out slots instead.
   */
  emptyInputs?: boolean;
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
  return { [io.positionIds]: int64(pos, [layout.batch, S]) };
}

/**
 * Growable cache tensors, one per cache input, each [B, kvH, C, D] or, for keys the inplace graph
 * reads transposed, [B, kvH, D, C] (slots last). Both are B*kvH*R rows of C*E floats (R = 1, E = D
 * or R = D, E = 1), so growing and copying rows is one loop for both.
 */
class SlotBuffers {
  readonly tensors = new Map<string, Tensor>();
  /** Sequence slots the buffers hold now; they grow on demand up to `maxCapacity`. */
  allocated = 0;

  constructor(
    private readonly layout: CacheLayout,
    readonly maxCapacity: number,
    private readonly slotsLast: (name: string) => boolean,
  ) {}

  private shape(name: string): { R: number; E: number } {
    return this.slotsLast(name) ? { R: this.layout.headDim, E: 1 } : { R: 1, E: this.layout.headDim };
  }

  /**
   * Makes the buffers hold at least `width` slots. A step's time grows with the allocated slots
   * (fused form at batch 8: 33 ms with 140 slots, 125 ms with 1,800, most of it onnxruntime-node
   * copying the whole present out of the run), so the buffers start near the prompt and grow by
   * half (amortised copies) rather than being sized for the longest possible run.
   */
  ensure(width: number): void {
    if (width <= this.allocated) return;
    if (width > this.maxCapacity) throw new InputError(`sequence of ${width} tokens exceeds the cache capacity of ${this.maxCapacity}`);
    const next = Math.min(this.maxCapacity, Math.max(width + 64, Math.ceil(this.allocated * 1.5)));
    const { batch: B, kvHeads: H, headDim: D } = this.layout;
    for (const name of this.layout.pastNames) {
      const { R, E } = this.shape(name);
      const grown = new Float32Array(B * H * next * D);
      const old = this.tensors.get(name)?.data as Float32Array | undefined;
      const was = this.allocated * E;
      if (old) for (let r = 0; r < B * H * R; r++) grown.set(old.subarray(r * was, (r + 1) * was), r * next * E);
      this.tensors.set(name, new Tensor('float32', grown, R === 1 ? [B, H, next, D] : [B, H, D, next]));
    }
    this.allocated = next;
  }

  /** Drops the buffers (a released cache). */
  release(): void {
    this.tensors.clear();
    this.allocated = 0;
  }

  /** A tensor shaped like `name`'s with zero slots. */
  noSlots(name: string): Tensor {
    const { batch: B, kvHeads: H, headDim: D } = this.layout;
    return new Tensor('float32', new Float32Array(0), this.shape(name).R === 1 ? [B, H, 0, D] : [B, H, D, 0]);
  }

  /**
   * Writes `n` new entries of row `row` at slots at..at+n-1 of `name`'s buffer, from `src`
   * [B, kvH, S, D] (its row `row`, positions 0..n-1), in whichever layout the buffer has.
   */
  writeEntries(name: string, row: number, at: number, src: Float32Array, S: number, n: number): void {
    const { kvHeads: H, headDim: D } = this.layout;
    const { R, E } = this.shape(name);
    const dst = this.tensors.get(name)!.data as Float32Array;
    const rowStride = this.allocated * E;
    for (let h = 0; h < H; h++) {
      const from = (row * H + h) * S * D;
      if (R === 1) {
        dst.set(src.subarray(from, from + n * D), (row * H + h) * rowStride + at * D);
        continue;
      }
      const base = (row * H + h) * R * rowStride + at; // [.., d, slot]
      for (let s = 0; s < n; s++) for (let d = 0; d < D; d++) dst[base + d * rowStride + s] = src[from + s * D + d]!;
    }
  }

  /** Copies the first `n` slots of row `from` of `source` into row `row`. */
  copyRow(row: number, source: SlotBuffers, from: number, n: number): void {
    const H = this.layout.kvHeads;
    for (const [name, t] of this.tensors) {
      const { R, E } = this.shape(name);
      const src = source.tensors.get(name)!.data as Float32Array;
      const dst = t.data as Float32Array;
      for (let hr = 0; hr < H * R; hr++) {
        const s = (from * H * R + hr) * source.allocated * E;
        dst.set(src.subarray(s, s + n * E), (row * H * R + hr) * this.allocated * E);
      }
    }
  }
}

/** What the two slot-buffer caches share: per-row lengths over growable buffers, rollback, row adoption. */
abstract class SlotCache implements KvCache {
  readonly lengths: number[];
  protected readonly slots: SlotBuffers;

  constructor(
    readonly layout: CacheLayout,
    maxCapacity: number,
    slotsLast: (name: string) => boolean = () => false,
  ) {
    this.lengths = new Array(layout.batch).fill(0);
    this.slots = new SlotBuffers(layout, maxCapacity, slotsLast);
  }

  get batch(): number {
    return this.layout.batch;
  }

  abstract prepare(newCounts: number[], S: number): StepFeeds;
  abstract commit(outputs: Record<string, Tensor>, newCounts: number[]): void;

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
    const same = source instanceof this.constructor && source instanceof SlotCache;
    if (!same || source.layout.kvHeads !== this.layout.kvHeads || source.layout.headDim !== this.layout.headDim) {
      throw new Error('adoptRow: the source must be a cache of the same kind and model');
    }
    const n = source.lengths[from]!;
    this.slots.ensure(Math.max(n, 1));
    this.slots.copyRow(row, source.slots, from, n);
    this.lengths[row] = n;
  }

  release(): void {
    this.slots.release();
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
    for (const [name, t] of this.slots.tensors) {
      feeds[name] = t;
      fetches[this.layout.presentOf(name)] = t;
    }
    return { feeds, fetches };
  }

  commit(_outputs: Record<string, Tensor>, newCounts: number[]): void {
    for (let b = 0; b < this.batch; b++) this.lengths[b]! += newCounts[b]!;
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
    const B = this.batch;
    this.slots.ensure(Math.max(...this.lengths.map((l, b) => l + newCounts[b]!)));
    // A prefill into an empty cache attends to no slot: the graph gets zero slots rather than C masked ones.
    const empty = this.layout.emptyInputs !== false && this.lengths.every((l) => l === 0);
    const C = empty ? 0 : this.slots.allocated;
    const T = C + S;
    const mask = new BigInt64Array(B * T);
    for (let b = 0; b < B; b++) {
      mask.fill(1n, b * T, b * T + this.lengths[b]!);
      mask.fill(1n, b * T + C, b * T + C + newCounts[b]!);
    }
    const feeds: Record<string, Tensor> = { [io.attentionMask]: int64(mask, [B, T]), ...positionFeeds(this.layout, this.lengths, S) };
    for (const [name, t] of this.slots.tensors) feeds[name] = empty ? this.slots.noSlots(name) : t;
    return { feeds };
  }

  commit(outputs: Record<string, Tensor>, newCounts: number[]): void {
    for (const name of this.slots.tensors.keys()) {
      const fresh = outputs[this.layout.presentOf(name)]!; // [B, kvH, S, D]
      for (let b = 0; b < this.batch; b++)
        this.slots.writeEntries(name, b, this.lengths[b]!, fresh.data as Float32Array, fresh.dims[2]!, newCounts[b]!);
    }
    for (let b = 0; b < this.batch; b++) this.lengths[b]! += newCounts[b]!;
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

  /** Rows of different lengths share one padded past here: a row cannot be moved in on its own. */
  adoptRow(): void {
    throw new Error('adoptRow: a concatenating cache cannot take over rows (see CACHE_ADOPTS_ROWS)');
  }

  release(): void {
    this.past.clear();
    this.valid = [];
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
    const feeds: Record<string, Tensor> = { [io.attentionMask]: int64(mask, [B, T]), ...positionFeeds(this.layout, this.lengths, S) };
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
