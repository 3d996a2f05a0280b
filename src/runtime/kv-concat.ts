// The standard form's cache: the graph returns past ++ new (present.*), which becomes the next past. Rows of
// different lengths share one padded past, so each slot of each row is marked valid or padding; trimmed sliding
// layers (kv-layout.ts WindowPlan) are a second such group, compacted to their latest entries before a step.
import { io } from '../core/io.js';
import { heldAfterTruncate, int64, positionFeeds, wholeNames, type CacheLayout, type KvCache, type StepFeeds } from './kv-layout.js';
import { Tensor } from './session.js';

/** The past tensors of some layers [B, kvH, T, D] and, per row and slot, whether it holds a token. */
class ConcatGroup {
  past: Map<string, Tensor>;
  /** Per slot and row: 1 where the slot holds a real token, 0 for padding. */
  valid: Uint8Array[];

  constructor(
    private readonly layout: CacheLayout,
    names: readonly string[],
  ) {
    const dims = [layout.batch, layout.kvHeads, 0, layout.headDim];
    this.past = new Map(names.map((n) => [n, new Tensor('float32', new Float32Array(0), dims)]));
    this.valid = Array.from({ length: layout.batch }, () => new Uint8Array(0));
  }

  /** The entries row b holds. */
  count(b: number): number {
    return this.valid[b]!.reduce((a, v) => a + v, 0);
  }

  /** The mask [B, T + S] of a step appending newCounts[b] tokens to row b. */
  mask(newCounts: number[], S: number): Tensor {
    const B = this.layout.batch;
    const T = this.valid[0]!.length + S;
    const mask = new BigInt64Array(B * T);
    for (let b = 0; b < B; b++) {
      const v = this.valid[b]!;
      for (let t = 0; t < v.length; t++) mask[b * T + t] = BigInt(v[t]!);
      for (let s = 0; s < S; s++) mask[b * T + v.length + s] = s < newCounts[b]! ? 1n : 0n;
    }
    return int64(mask, [B, T]);
  }

  commit(outputs: Record<string, Tensor>, newCounts: number[]): void {
    const S = Math.max(...newCounts);
    for (const name of this.past.keys()) this.past.set(name, outputs[this.layout.presentOf(name)]!);
    for (let b = 0; b < this.layout.batch; b++) {
      const old = this.valid[b]!;
      const next = new Uint8Array(old.length + S);
      next.set(old);
      next.fill(1, old.length, old.length + newCounts[b]!);
      this.valid[b] = next;
    }
  }

  /**
   * Marks row's slots after its first `length` entries as padding. At batch 1 the past is cut to that length (no
   * padding left behind); with more rows the slots stay, masked out. Throws where the row holds fewer.
   */
  keepFirst(row: number, length: number): void {
    const valid = this.valid[row]!;
    let kept = 0;
    for (let t = 0; t < valid.length; t++) {
      if (!valid[t]) continue;
      if (kept >= length) valid[t] = 0;
      else kept++;
    }
    if (kept < length) throw new Error(`truncate: row ${row} holds ${kept} tokens, not ${length}`);
    if (this.layout.batch === 1) this.rebuild([[...valid].flatMap((v, t) => (v ? [t] : []))]);
  }

  /** Rows holding more than `keep` entries keep their latest `keep`, every row's entries moved to its first slots. */
  keepLast(keep: number): void {
    const B = this.layout.batch;
    if (!Array.from({ length: B }, (_, b) => this.count(b)).some((n) => n > keep)) return;
    const slots = this.valid.map((v) => {
      const all = [...v].flatMap((x, t) => (x ? [t] : []));
      return all.slice(Math.max(0, all.length - keep));
    });
    this.rebuild(slots);
  }

  /** A new past whose row b holds the entries at `slots[b]` of the old one, in order, right-padded. */
  private rebuild(slots: number[][]): void {
    const T = Math.max(...slots.map((s) => s.length));
    const { kvHeads: H, headDim: D } = this.layout;
    for (const [name, t] of this.past) {
      const [B, , oldT] = t.dims as [number, number, number, number];
      const src = t.data as Float32Array;
      const out = new Float32Array(B * H * T * D);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const from = (b * H + h) * oldT * D;
          const to = (b * H + h) * T * D;
          slots[b]!.forEach((s, i) => out.set(src.subarray(from + s * D, from + (s + 1) * D), to + i * D));
        }
      }
      this.past.set(name, new Tensor('float32', out, [B, H, T, D]));
    }
    this.valid = slots.map((s) => {
      const v = new Uint8Array(T);
      v.fill(1, 0, s.length);
      return v;
    });
  }
}

/** standard form: the graph returns past ++ new; the present becomes the next past. */
export class ConcatCache implements KvCache {
  readonly lengths: number[];
  private whole: ConcatGroup;
  /** Trimmed sliding layers, or null. */
  private local: ConcatGroup | null;

  constructor(readonly layout: CacheLayout) {
    this.lengths = new Array(layout.batch).fill(0);
    this.whole = new ConcatGroup(layout, wholeNames(layout));
    this.local = layout.window ? new ConcatGroup(layout, layout.window.names) : null;
  }

  get batch(): number {
    return this.layout.batch;
  }

  held(): ReadonlyMap<string, Tensor> {
    return new Map([...this.whole.past, ...(this.local?.past ?? [])]);
  }

  /** Rows of different lengths share one padded past here: a row cannot be moved in on its own. */
  adoptRow(): void {
    throw new Error('adoptRow: a concatenating cache cannot take over rows (see CACHE_ADOPTS_ROWS)');
  }

  release(): void {
    this.whole = new ConcatGroup(this.layout, []);
    this.local = null;
  }

  prepare(newCounts: number[], S: number): StepFeeds {
    const feeds: Record<string, Tensor> = {
      [io.attentionMask]: this.whole.mask(newCounts, S),
      ...positionFeeds(this.layout, this.lengths, S),
    };
    for (const [name, t] of this.whole.past) feeds[name] = t;
    if (this.local) {
      const plan = this.layout.window!;
      this.local.keepLast(plan.needed + plan.rollback);
      feeds[io.attentionMaskLocal] = this.local.mask(newCounts, S);
      for (const [name, t] of this.local.past) feeds[name] = t;
    }
    return { feeds };
  }

  /** Forgets row's tokens after its first `length` (the whole layers' slots and the trimmed layers' latest ones). */
  truncate(row: number, length: number): void {
    if (length > this.lengths[row]!) throw new Error(`truncate: row ${row} holds ${this.lengths[row]} tokens, not ${length}`);
    this.whole.keepFirst(row, length);
    if (this.local) {
      const held = this.local.count(row);
      this.local.keepFirst(row, heldAfterTruncate(this.layout.window!, row, held, this.lengths[row]! - length, length));
    }
    this.lengths[row] = length;
  }

  commit(outputs: Record<string, Tensor>, newCounts: number[]): void {
    this.whole.commit(outputs, newCounts);
    this.local?.commit(outputs, newCounts);
    for (let b = 0; b < this.batch; b++) this.lengths[b]! += newCounts[b]!;
  }
}
