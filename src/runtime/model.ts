// What generation, eval and bench need of a model, whatever runs it: one onnxruntime session
// (DecoderModel) or several ranks (a sharded model). `openModel` picks the right one for a folder.
import type { DecoderSpec } from '../core/spec.js';
import type { Device } from './device.js';
import { isArtifact } from '../formats/artifact.js';
import { isShardedModel } from './sharded/manifest.js';

/**
 * Logits of one forward step: [B, S, V], rows right-padded; or, when only each row's last position
 * was computed, [B, 1, V] with `kept[b]` the position row b holds.
 */
export class StepLogits {
  constructor(
    readonly data: Float32Array,
    readonly batch: number,
    readonly seq: number,
    readonly vocab: number,
    readonly kept: readonly number[] | null = null,
  ) {}

  /** Logits predicting the token after position s of row b (a view, not a copy). */
  at(b: number, s: number): Float32Array {
    if (this.kept && this.kept[b] !== s) throw new Error(`logits of row ${b} were kept for position ${this.kept[b]} only, not ${s}`);
    const off = (b * this.seq + (this.kept ? 0 : s)) * this.vocab;
    return this.data.subarray(off, off + this.vocab);
  }
}

export interface ForwardOptions {
  /**
   * 'last': the caller reads only each row's last new position (prefill for generation); a model
   * that can skip the other positions' lm_head does. Default 'all'.
   */
  logits?: 'all' | 'last';
}

/**
 * Per-row state a model keeps between forward steps (the KV cache). Whoever creates one releases it:
 * its buffers, or a sharded model's caches in the rank workers, live until then.
 */
export interface SequenceState {
  readonly batch: number;
  /** Tokens held per row. */
  readonly lengths: readonly number[];
  /** Forgets everything after the first `length` tokens of `row` (speculative decoding's rollback). */
  truncate(row: number, length: number): void;
  /**
   * Makes `row` hold what row `from` of `source` (a cache of the same model) holds: how continuous
   * batching moves a request prefilled alone into a decode slot. Only where the model declares
   * `capabilities.adoptRows`; elsewhere it throws.
   */
  adoptRow(row: number, source: SequenceState, from: number): void;
  /** Frees what the state holds; it must not be used afterwards. Releasing twice is harmless. */
  release(): void;
}

/** What a model's caches can do beyond forward and truncate, declared so that callers never probe. */
export interface ModelCapabilities {
  /** Its caches take over rows of one another (SequenceState.adoptRow): continuous batching works. */
  adoptRows: boolean;
}

/** How a cache will be used, where that bounds what it must keep. */
export interface CacheOptions {
  /**
   * Tokens a row may be truncated by below the start of its last step (a speculative draft proposes one token a step
   * and rolls several back). Caches trimmed to a sliding window keep as many more entries; 0 by default.
   */
  rollback?: number;
}

export interface CausalLM<S extends SequenceState = SequenceState> {
  readonly spec: DecoderSpec;
  readonly device: Device;
  /** A description for reports, e.g. "fused attention" or "tp 2 x pp 2". */
  readonly description: string;
  readonly capabilities: ModelCapabilities;
  /** Fresh state for `batch` rows of at most `capacity` tokens each; the caller releases it. */
  createCache(batch: number, capacity: number, opts?: CacheOptions): S;
  /** Appends rows[b] to row b and returns the logits at every new position (or each row's last, see ForwardOptions). */
  forward(cache: S, rows: number[][], opts?: ForwardOptions): Promise<StepLogits>;
  release(): Promise<void>;
}

/** One forward pass over `rows` on a fresh cache, released afterwards (eval windows, teacher logits). */
export async function forwardOnce(model: CausalLM, rows: number[][], opts?: ForwardOptions): Promise<StepLogits> {
  const cache = model.createCache(rows.length, Math.max(...rows.map((r) => r.length)));
  try {
    return await model.forward(cache, rows, opts);
  } finally {
    cache.release();
  }
}

/** Where and how to run a model. */
export interface OpenOptions {
  device: Device;
  /** A sharded model's device per rank (rank order); the others refuse it. */
  rankDevices?: Device[];
  /** Intra-op threads (default: onnxruntime's choice, all cores). */
  threads?: number;
}

/** Whether `dir` is something openModel runs: an artifact (model.onnx) or a sharded model. */
export function isRunnable(dir: string): boolean {
  return isArtifact(dir) || isShardedModel(dir);
}

/** Opens an artifact folder: a sharded model (one worker per rank) or one onnxruntime session. */
export async function openModel(dir: string, opts: OpenOptions): Promise<CausalLM> {
  if (isShardedModel(dir)) return (await import('./sharded/model.js')).ShardedModel.open(dir, opts);
  return (await import('./decoder.js')).DecoderModel.open(dir, opts);
}
