// A sharded model run by one worker thread per rank. The main thread drives every step: it hands
// token ids to the first stage, sums the tensor-parallel ranks' partial outputs after each attention
// and MLP block (the all-reduce), passes hidden states from stage to stage, and gathers the logits.
// Rows are cut into micro-batches (one per stage, at most) that flow through the stages concurrently.
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { DeviceError, InputError } from '../../core/errors.js';
import { startModuleWorker } from '../../core/worker.js';
import { readModelSpec } from '../../model/architectures/index.js';
import { layerWindow, type DecoderSpec } from '../../core/spec.js';
import type { Device } from '../device.js';
import { RunError } from '../session.js';
import { io } from '../../core/io.js';
import { StepLogits, type CacheOptions, type CausalLM, type ModelCapabilities, type OpenOptions, type SequenceState } from '../model.js';
import { readShardManifest, type RankRecord, type ShardManifest } from './manifest.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './protocol.js';

/** A rank's worker and its pending requests. */
class RankWorker {
  private next = 1;
  private readonly pending = new Map<number, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void }>();
  readonly ready: Promise<WorkerReply>;

  constructor(
    readonly record: RankRecord,
    private readonly worker: Worker,
  ) {
    this.ready = new Promise((res, rej) => this.pending.set(0, { resolve: res, reject: rej }));
    worker.on('message', (r: WorkerReply) => {
      const p = this.pending.get(r.id);
      this.pending.delete(r.id);
      if (!p) return;
      if (r.ok) p.resolve(r);
      else
        p.reject(
          r.kind === 'input'
            ? new InputError(r.message)
            : r.kind === 'device'
              ? new DeviceError(r.message)
              : r.kind === 'run'
                ? new RunError(r.message)
                : new Error(r.message),
        );
    });
    const fail = (e: Error) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`rank ${record.rank} worker exited (code ${code})`)));
  }

  request(req: WorkerRequest, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    const id = this.next++;
    return new Promise((res, rej) => {
      this.pending.set(id, { resolve: res, reject: rej });
      this.worker.postMessage({ id, req }, transfer);
    });
  }

  /** Runs one graph; resolves to its output. */
  async run(req: Extract<WorkerRequest, { op: 'run' }>): Promise<Float32Array> {
    return (await this.runWithResidual(req)).data;
  }

  /** Runs one graph; its output and, for a segment given partial_sum, hidden_states with the normed sum added. */
  async runWithResidual(req: Extract<WorkerRequest, { op: 'run' }>): Promise<{ data: Float32Array; residual?: Float32Array }> {
    const r = (await this.request(req)) as { data: Float32Array; residual?: Float32Array };
    return { data: r.data, residual: r.residual };
  }

  async close(): Promise<void> {
    await this.request({ op: 'close' }).catch(() => undefined);
    await this.worker.terminate();
  }
}

/** The KV cache of a sharded model: held by the ranks; the main thread keeps lengths and the micro-batch groups. */
class ShardedCache implements SequenceState {
  readonly lengths: number[];
  private released = false;
  constructor(
    readonly id: number,
    /** Rows of each micro-batch group, in order. */
    readonly groups: number[][],
    private readonly ranks: RankWorker[],
  ) {
    this.lengths = new Array(groups.reduce((a, g) => a + g.length, 0)).fill(0);
  }

  get batch(): number {
    return this.lengths.length;
  }

  truncate(row: number, length: number): void {
    if (length > this.lengths[row]!) throw new Error(`truncate: row ${row} holds ${this.lengths[row]} tokens, not ${length}`);
    const group = this.groups.findIndex((g) => g.includes(row));
    const local = this.groups[group]!.indexOf(row);
    // Requests reach each rank in order, so the next forward sees the truncation.
    for (const r of this.ranks) void r.request({ op: 'truncate', cache: this.id, group, row: local, length }).catch(() => undefined);
    this.lengths[row] = length;
  }

  /** Each rank's graphs hold their own rows: moving one in would take a transfer between workers. */
  adoptRow(): void {
    throw new Error("adoptRow: a sharded model's caches cannot take over rows");
  }

  /** Frees the cache in every rank (a worker that has exited holds nothing to free). */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const r of this.ranks) void r.request({ op: 'drop', cache: this.id }).catch(() => undefined);
  }
}

/** The layers that attend through the sliding window. */
const slidingLayers = (spec: DecoderSpec): number[] =>
  Array.from({ length: spec.numLayers }, (_, i) => i).filter((i) => layerWindow(spec, i) !== null);

export class ShardedModel implements CausalLM<ShardedCache> {
  private nextCache = 1;

  private constructor(
    readonly dir: string,
    readonly manifest: ShardManifest,
    readonly spec: DecoderSpec,
    readonly device: Device,
    /** ranks[stage][tpRank] */
    private readonly ranks: RankWorker[][],
  ) {}

  /** Verifies the folder against its manifest, then starts one worker per rank. */
  static async open(dir: string, opts: OpenOptions): Promise<ShardedModel> {
    const manifest = await readShardManifest(dir);
    const spec = readModelSpec(dir);
    const { tp, pp } = manifest.layout;
    // Tensor-parallel ranks run at once and share the cores; pipeline stages mostly take turns.
    const threads = opts.threads ?? Math.max(1, Math.floor(availableParallelism() / tp));
    const ranks: RankWorker[][] = Array.from({ length: pp }, () => []);
    if (opts.rankDevices && opts.rankDevices.length !== manifest.ranks.length) {
      throw new InputError(
        `--rank-devices: ${opts.rankDevices.length} devices for ${manifest.ranks.length} ranks (tp ${tp} x pp ${pp}) in ${dir}`,
      );
    }
    for (const r of manifest.ranks) {
      const init: WorkerInit = {
        rank: r.rank,
        segments: r.segments.map((s) => ({ id: s.id, path: resolve(join(dir, r.dir, s.file)), pastNames: s.pastNames })),
        kvHeads: r.kvHeads[1] - r.kvHeads[0],
        headDim: spec.headDim,
        maxPositions: spec.maxPositions,
        ...(spec.slidingWindow === undefined ? {} : { window: { size: spec.slidingWindow, layers: slidingLayers(spec) } }),
        attention: manifest.layout.attention,
        device: opts.rankDevices?.[r.rank] ?? opts.device,
        threads,
      };
      ranks[r.stage]![r.tpRank] = new RankWorker(r, startModuleWorker(import.meta.url, 'worker', init));
    }
    const all = ranks.flat();
    try {
      await Promise.all(all.map((w) => w.ready));
    } catch (e) {
      await Promise.all(all.map((w) => w.close()));
      throw e;
    }
    return new ShardedModel(dir, manifest, spec, opts.device, ranks);
  }

  get description(): string {
    const { tp, pp, attention } = this.manifest.layout;
    return `tp ${tp} x pp ${pp}, ${attention} attention`;
  }

  readonly capabilities: ModelCapabilities = { adoptRows: false };

  /** Caches each rank holds, in rank order: what release must bring back down (a leak check). */
  async rankCacheCounts(): Promise<number[]> {
    const ranks = [...this.ranks.flat()].sort((a, b) => a.record.rank - b.record.rank);
    return Promise.all(ranks.map(async (r) => ((await r.request({ op: 'stats' })) as { caches?: number }).caches ?? 0));
  }

  /** The most slots a trimmed sliding-layer cache tensor holds now, per rank in rank order (0: none trimmed). */
  async rankWindowSlots(): Promise<number[]> {
    const ranks = [...this.ranks.flat()].sort((a, b) => a.record.rank - b.record.rank);
    return Promise.all(ranks.map(async (r) => ((await r.request({ op: 'stats' })) as { windowSlots?: number }).windowSlots ?? 0));
  }

  createCache(batch: number, capacity: number, opts: CacheOptions = {}): ShardedCache {
    if (capacity > this.spec.maxPositions)
      throw new InputError(`${capacity} tokens exceed the model's context of ${this.spec.maxPositions} (max_position_embeddings)`);
    // One micro-batch per stage where the rows allow: while stage s works on group g, stage s-1 takes g+1.
    const count = Math.min(batch, this.manifest.layout.pp);
    const groups = Array.from({ length: count }, (_, g) =>
      Array.from({ length: batch }, (_, b) => b).filter((b) => Math.floor((b * count) / batch) === g),
    );
    const cache = new ShardedCache(this.nextCache++, groups, this.ranks.flat());
    for (const r of this.ranks.flat())
      void r.request({ op: 'cache', cache: cache.id, groups: groups.map((g) => ({ batch: g.length, capacity })), rollback: opts.rollback });
    return cache;
  }

  /** All positions' logits always (a rank graph has no logits_index): the last-only option is ignored. */
  async forward(cache: ShardedCache, rows: number[][]): Promise<StepLogits> {
    const B = cache.batch;
    if (rows.length !== B) throw new Error(`forward: ${rows.length} rows for a cache of batch ${B}`);
    const S = Math.max(...rows.map((r) => r.length));
    // Each group is padded to its own longest row (the caches' convention), then laid out at [b, 0..Sg).
    const parts = await Promise.all(
      cache.groups.map((g, k) =>
        this.forwardGroup(
          cache.id,
          k,
          g.map((b) => rows[b]!),
        ),
      ),
    );
    const V = this.spec.vocabSize;
    const logits = new Float32Array(B * S * V);
    cache.groups.forEach((g, k) => {
      const Sg = Math.max(...g.map((b) => rows[b]!.length));
      g.forEach((b, i) => logits.set(parts[k]!.subarray(i * Sg * V, (i + 1) * Sg * V), b * S * V));
    });
    rows.forEach((r, b) => (cache.lengths[b]! += r.length));
    return new StepLogits(logits, B, S, V);
  }

  /** One micro-batch through every stage: logits [Bg, S, V]. */
  private async forwardGroup(cache: number, group: number, rows: number[][]): Promise<Float32Array> {
    const counts = rows.map((r) => r.length);
    const S = Math.max(...counts);
    const ids = new BigInt64Array(rows.length * S);
    // Right padding repeats the last token: padded slots are masked out.
    rows.forEach((r, b) => {
      for (let s = 0; s < S; s++) ids[b * S + s] = BigInt(r[Math.min(s, r.length - 1)]!);
    });
    const base = { op: 'run' as const, cache, group, counts, S };
    const { tp, vocab } = this.manifest.layout;
    let hidden: Float32Array | null = null;
    // Sandwich norms (Gemma): the last block's summed shares, not yet normed; the next segment norms and adds it.
    let pending: Float32Array | null = null;
    for (const [stage, ranks] of this.ranks.entries()) {
      const segs = ranks[0]!.record.segments;
      if (tp === 1) {
        const out = await ranks[0]!.run({ ...base, segment: segs[0]!.id, ...(hidden ? { hidden } : { ids }) });
        if (stage === this.ranks.length - 1) return out;
        hidden = out;
        continue;
      }
      for (const seg of segs) {
        const input: { ids?: BigInt64Array; hidden?: Float32Array; partialSum?: Float32Array } =
          seg.input === io.inputIds ? { ids } : { hidden: hidden!, ...(seg.pendingNorm ? { partialSum: pending! } : {}) };
        const req: Extract<WorkerRequest, { op: 'run' }> = { ...base, segment: seg.id, ...input };
        if (seg.head)
          return vocab === 'split' ? concatVocab(await Promise.all(ranks.map((r) => r.run(req))), rows.length * S) : ranks[0]!.run(req);
        if (seg.id === 'embed' && vocab === 'replicated') {
          hidden = await ranks[0]!.run(req);
          continue;
        }
        // All-reduce: the residual stream plus every rank's share of the block's output.
        const outs: Array<{ data: Float32Array; residual?: Float32Array }> = await Promise.all(ranks.map((r) => r.runWithResidual(req)));
        const partials = outs.map((o) => o.data);
        // A segment given partial_sum returns the residual stream with it added (every rank alike).
        if (seg.pendingNorm) hidden = outs[0]!.residual!;
        if (this.spec.sandwichNorms && seg.half) {
          // The block's post norm needs the whole sum: it stays pending for the next segment.
          const sum = new Float32Array(partials[0]!.length);
          for (const p of partials) for (let i = 0; i < sum.length; i++) sum[i]! += p[i]!;
          pending = sum;
          continue;
        }
        const sum: Float32Array = seg.id === 'embed' ? new Float32Array(partials[0]!.length) : hidden!.slice();
        for (const p of partials) for (let i = 0; i < sum.length; i++) sum[i]! += p[i]!;
        hidden = sum;
      }
    }
    throw new Error('sharded model has no head stage');
  }

  async release(): Promise<void> {
    await Promise.all(this.ranks.flat().map((r) => r.close()));
  }
}

/** Concatenates vocabulary slices [N, V/tp] from each rank into [N, V]. */
function concatVocab(slices: Float32Array[], n: number): Float32Array {
  const w = slices[0]!.length / n;
  const out = new Float32Array(n * w * slices.length);
  for (let i = 0; i < n; i++) slices.forEach((s, k) => out.set(s.subarray(i * w, (i + 1) * w), (i * slices.length + k) * w));
  return out;
}
