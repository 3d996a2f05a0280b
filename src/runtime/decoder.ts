// A loaded decoder artifact: its session, spec and cache layout, and forward passes over
// right-padded rows of new tokens. Generation, eval and bench all run models through this.
import type { Artifact } from '../formats/artifact.js';
import { openArtifact } from '../model/artifact.js';
import { InputError } from '../core/errors.js';
import { ATTENTION, attentionFormOf, cacheOutputOf, io, isCacheInput, type AttentionForm } from '../core/io.js';
import { layerWindow, type DecoderSpec } from '../core/spec.js';
import { CACHE_ADOPTS_ROWS, createKvCache, defaultCacheKind, type CacheKind, type CacheLayout, type KvCache } from './kv-cache.js';
import { ModelSession, Tensor } from './session.js';
import { StepLogits, type CacheOptions, type CausalLM, type ForwardOptions, type ModelCapabilities, type OpenOptions } from './model.js';

export { StepLogits };
import type { Device } from './device.js';
import { describeAdapter } from './webgpu-adapter.js';

export type { CacheKind };

/** A decoder artifact run by one onnxruntime session. */
export class DecoderModel implements CausalLM<KvCache> {
  private constructor(
    readonly artifact: Artifact,
    readonly session: ModelSession,
    readonly form: AttentionForm,
    private readonly pastNames: string[],
  ) {}

  static async open(dir: string, opts: OpenOptions): Promise<DecoderModel> {
    if (opts.rankDevices) throw new InputError(`--rank-devices: ${dir} is not a sharded model (use --device)`);
    const artifact = openArtifact(dir);
    const session = await ModelSession.open(artifact.modelPath, opts);
    try {
      const form = attentionFormOf(artifact.modelPath, session.inputNames, artifact.spec.numLayers, artifact.attention);
      return new DecoderModel(artifact, session, form, session.inputNames.filter(isCacheInput));
    } catch (e) {
      await session.release();
      throw e;
    }
  }

  get spec(): DecoderSpec {
    return this.artifact.spec;
  }

  get device(): Device {
    return this.session.device;
  }

  /** The form, and on WebGPU the adapter and what runs on the CPU for it: "fused attention; webgpu: ...". */
  get description(): string {
    const gpu = this.session.webgpu;
    if (!gpu) return `${this.form} attention`;
    return [`${this.form} attention; webgpu: ${describeAdapter(gpu.adapter)}`, ...gpu.notes].join('; ');
  }

  /** What the caches createCache makes by default can do. */
  get capabilities(): ModelCapabilities {
    return { adoptRows: CACHE_ADOPTS_ROWS[defaultCacheKind(this.form)] };
  }

  /** Whether the graph's sliding layers read caches trimmed to their window (it takes attention_mask_local). */
  get windowedCache(): boolean {
    return this.session.inputNames.includes(io.attentionMaskLocal);
  }

  /**
   * A fresh cache for `batch` rows; `capacity` bounds the tokens a row may hold. The fused form
   * shares one pre-allocated buffer between past and present; `kind: 'concat'` forces the copying
   * cache instead (GroupQueryAttention accepts both at batch 1; the benchmark compares them).
   * Sliding layers of a windowed graph keep only their window (and `rollback` more).
   */
  createCache(batch: number, capacity: number, opts: CacheOptions & { kind?: CacheKind } = {}): KvCache {
    const kind = opts.kind ?? defaultCacheKind(this.form);
    const spec = this.spec;
    const local = this.pastNames.filter((n) => layerWindow(spec, Number(n.split('.')[1])) !== null);
    const window = this.windowedCache
      ? { names: local, needed: spec.slidingWindow! - 1, rollback: Math.max(0, Math.floor(opts.rollback ?? 0)) }
      : undefined;
    const layout: CacheLayout = {
      batch,
      kvHeads: this.spec.kvHeads,
      headDim: this.spec.headDim,
      pastNames: this.pastNames,
      presentOf: cacheOutputOf,
      positionIds: ATTENTION[this.form].positionIds,
      maxPositions: this.spec.maxPositions,
      emptyInputs: this.device !== 'webgpu',
      ...(window ? { window } : {}),
    };
    if (capacity > this.spec.maxPositions) {
      throw new InputError(`${capacity} tokens exceed the model's context of ${this.spec.maxPositions} (max_position_embeddings)`);
    }
    if (kind === 'shared' && this.form !== 'fused')
      throw new Error('a shared past/present buffer needs the fused (GroupQueryAttention) graph');
    const runtimeOwned = ATTENTION[this.form].cacheOwner === 'runtime';
    if ((kind === 'inplace') !== runtimeOwned) throw new Error(`a ${kind} cache does not fit the ${this.form} graph`);
    return createKvCache(kind, layout, capacity);
  }

  /** Appends rows[b] to row b of the cache and returns the logits at every new position (or each row's last). */
  async forward(cache: KvCache, rows: number[][], opts: ForwardOptions = {}): Promise<StepLogits> {
    const B = cache.batch;
    if (rows.length !== B) throw new Error(`forward: ${rows.length} rows for a cache of batch ${B}`);
    const counts = rows.map((r) => r.length);
    const S = Math.max(...counts);
    const ids = new BigInt64Array(B * S);
    for (let b = 0; b < B; b++) {
      const row = rows[b]!;
      for (let s = 0; s < row.length; s++) ids[b * S + s] = BigInt(row[s]!);
      // Right padding repeats the last token: any valid id works since padded slots are masked out.
      for (let s = row.length; s < S; s++) ids[b * S + s] = BigInt(row[row.length - 1] ?? 0);
    }
    const { feeds, fetches } = cache.prepare(counts, S);
    feeds[io.inputIds] = new Tensor('int64', ids, [B, S]);
    const selects = ATTENTION[this.form].selectsLogits;
    const kept = selects && opts.logits === 'last' ? counts.map((n) => Math.max(0, n - 1)) : null;
    if (selects) {
      // Flat positions into [B * S]: each row's last, or all of them.
      const index = kept
        ? BigInt64Array.from(kept, (s, b) => BigInt(b * S + s))
        : BigInt64Array.from({ length: B * S }, (_, i) => BigInt(i));
      feeds[io.logitsIndex] = new Tensor('int64', index, [B, kept ? 1 : S]);
    }
    const outputs = await this.session.run(feeds, fetches ? { [io.logits]: null, ...fetches } : undefined);
    cache.commit(outputs, counts);
    const logits = outputs[io.logits]!;
    return new StepLogits(logits.data as Float32Array, B, kept ? 1 : S, logits.dims[2]!, kept);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
