// Messages between the sharded runtime (main thread) and its rank workers. Tensors travel as typed
// arrays (transferred, not copied, where the sender no longer needs them).
import type { AttentionForm } from '../../core/io.js';
import type { Device } from '../device.js';

export interface WorkerInit {
  rank: number;
  /** Absolute graph paths by segment id, with each graph's past_key_values inputs. */
  segments: Array<{ id: string; path: string; pastNames: string[] }>;
  kvHeads: number;
  headDim: number;
  maxPositions: number;
  /**
   * The model's sliding window and the layers that slide: a segment graph taking attention_mask_local keeps those
   * layers' caches trimmed to it (runtime/kv-layout.ts WindowPlan).
   */
  window?: { size: number; layers: number[] };
  attention: AttentionForm;
  device: Device;
  threads?: number;
}

export type WorkerRequest =
  /** `rollback`: what trimmed sliding-layer caches keep beyond the window (CacheOptions.rollback). */
  | { op: 'cache'; cache: number; groups: Array<{ batch: number; capacity: number }>; rollback?: number }
  | {
      op: 'run';
      cache: number;
      group: number;
      segment: string;
      counts: number[];
      S: number;
      ids?: BigInt64Array;
      hidden?: Float32Array;
      /** Sandwich norms: the previous block's all-reduced output (the segment's partial_sum). */
      partialSum?: Float32Array;
    }
  | { op: 'truncate'; cache: number; group: number; row: number; length: number }
  /** Frees a cache's tensors in the rank (sent when the main thread's cache is released). */
  | { op: 'drop'; cache: number }
  /** How many caches the rank holds (a leak check). */
  | { op: 'stats' }
  | { op: 'close' };

/** A rank's reply to request `id`: the output tensor of a run, or an error to rethrow with its kind. */
export type WorkerReply =
  /** `residual`: a segment with partial_sum also returns hidden_states with it added (hidden_states_out). */
  /** `windowSlots` (stats): the most slots a trimmed sliding-layer cache tensor of the rank holds. */
  | { id: number; ok: true; data?: Float32Array; dims?: number[]; residual?: Float32Array; caches?: number; windowSlots?: number }
  | { id: number; ok: false; kind: 'input' | 'device' | 'run' | 'internal'; message: string };
