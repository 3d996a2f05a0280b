// The growable cache buffers of the slot caches (fused and inplace forms): one tensor per cache input, rows
// right-padded, grown on demand, and for trimmed sliding layers shifted to their latest entries and kept small.
import { InputError } from '../core/errors.js';
import { Tensor } from './session.js';
import type { CacheLayout } from './kv-layout.js';

/**
 * Growable cache tensors, one per cache input, each [B, kvH, C, D] or, for keys the inplace graph
 * reads transposed, [B, kvH, D, C] (slots last). Both are B*kvH*R rows of C*E floats (R = 1, E = D
 * or R = D, E = 1), so growing and copying rows is one loop for both.
 */
export class SlotBuffers {
  readonly tensors = new Map<string, Tensor>();
  /** Sequence slots the buffers hold now; they grow on demand up to `maxCapacity`. */
  allocated = 0;

  /**
   * `ceiling`: trimmed sliding layers' buffers never grow past max(step width, ceiling) and shrink back to it
   * after a long prefill, so they stay near the window however long the context.
   */
  constructor(
    private readonly layout: CacheLayout,
    private readonly names: readonly string[],
    readonly maxCapacity: number,
    private readonly slotsLast: (name: string) => boolean,
    private readonly ceiling: number | null = null,
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
    let next = Math.min(this.maxCapacity, Math.max(width + 64, Math.ceil(this.allocated * 1.5)));
    if (this.ceiling !== null) next = Math.max(width, Math.min(next, this.ceiling));
    this.resize(next);
  }

  /** Trimmed buffers: gives back what a step wider than the ceiling (a long prefill) left allocated. */
  fit(width: number): void {
    if (this.ceiling === null) return;
    const target = Math.max(width, this.ceiling);
    if (this.allocated > target) this.resize(target);
  }

  /** Reallocates every buffer to `next` slots, keeping each row's first min(allocated, next). */
  private resize(next: number): void {
    const { batch: B, kvHeads: H, headDim: D } = this.layout;
    const kept = Math.min(this.allocated, next);
    for (const name of this.names) {
      const { R, E } = this.shape(name);
      const grown = new Float32Array(B * H * next * D);
      const old = this.tensors.get(name)?.data as Float32Array | undefined;
      const was = this.allocated * E;
      if (old) for (let r = 0; r < B * H * R; r++) grown.set(old.subarray(r * was, r * was + kept * E), r * next * E);
      this.tensors.set(name, new Tensor('float32', grown, R === 1 ? [B, H, next, D] : [B, H, D, next]));
    }
    this.allocated = next;
  }

  /** Moves row `row`'s slots from..from+n-1 to 0..n-1 (a trimmed row dropping its oldest entries). */
  shift(row: number, from: number, n: number): void {
    const H = this.layout.kvHeads;
    for (const [name, t] of this.tensors) {
      const { R, E } = this.shape(name);
      const data = t.data as Float32Array;
      for (let hr = 0; hr < H * R; hr++) {
        const base = (row * H * R + hr) * this.allocated * E;
        data.copyWithin(base, base + from * E, base + (from + n) * E);
      }
    }
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
