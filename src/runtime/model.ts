// What generation, eval and bench need of a model, whatever runs it: one onnxruntime session
// (DecoderModel) or several ranks (a sharded model). `openModel` picks the right one for a folder.
import type { DecoderSpec } from '../model/spec.js';
import type { Device } from './device.js';
import { isArtifact } from '../formats/artifact.js';
import { isShardedModel } from './sharded/manifest.js';

/** Logits of one forward step: [B, S, V], rows right-padded. */
export class StepLogits {
  constructor(readonly data: Float32Array, readonly batch: number, readonly seq: number, readonly vocab: number) {}

  /** Logits predicting the token after position s of row b (a view, not a copy). */
  at(b: number, s: number): Float32Array {
    const off = (b * this.seq + s) * this.vocab;
    return this.data.subarray(off, off + this.vocab);
  }
}

/** Per-row state a model keeps between forward steps (the KV cache). */
export interface SequenceState {
  readonly batch: number;
  /** Tokens held per row. */
  readonly lengths: readonly number[];
  /** Forgets everything after the first `length` tokens of `row` (speculative decoding's rollback). */
  truncate(row: number, length: number): void;
}

export interface CausalLM<S extends SequenceState = SequenceState> {
  readonly spec: DecoderSpec;
  readonly device: Device;
  /** A description for reports, e.g. "fused attention" or "tp 2 x pp 2". */
  readonly description: string;
  /** Fresh state for `batch` rows of at most `capacity` tokens each. */
  createCache(batch: number, capacity: number): S;
  /** Appends rows[b] to row b and returns the logits at every new position. */
  forward(cache: S, rows: number[][]): Promise<StepLogits>;
  release(): Promise<void>;
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
