// Runs a training graph: one onnxruntime session that takes a batch, the teacher's logits and the
// current weights (fed straight from the Float32Arrays the optimizer updates, no copies) and returns
// the loss and every weight's gradient.
import { io } from '../../core/io.js';
import { ModelSession, Tensor } from '../../runtime/session.js';
import type { Device } from '../../runtime/device.js';
import { TRAIN_IO, type TrainingGraph } from './train-graph.js';

/** The token inputs of a cacheless graph for a packed batch: every position valid, positions 0..S-1 per row. */
export function tokenFeeds({ B, S, ids }: TrainBatch): Record<string, Tensor> {
  const positions = new BigInt64Array(B * S);
  for (let i = 0; i < B * S; i++) positions[i] = BigInt(i % S);
  return {
    [io.inputIds]: new Tensor('int64', ids, [B, S]),
    [io.attentionMask]: new Tensor('int64', new BigInt64Array(B * S).fill(1n), [B, S]),
    [io.positionIds]: new Tensor('int64', positions, [B, S]),
  };
}

/** One training batch: B packed sequences of S tokens. */
export interface TrainBatch {
  B: number;
  S: number;
  /** [B, S] input tokens */
  ids: BigInt64Array;
  /** [B, S] next tokens (labels) */
  labels: BigInt64Array;
  /** [B, S] 1 where the label is a real token */
  mask: Float32Array;
}

export interface StepResult {
  loss: number;
  kl: number;
  ce: number;
  /** The hidden-state MSE, when the graph has that loss. */
  hiddenMse: number | null;
  grads: Map<string, Float32Array>;
}

export class TrainingSession {
  private constructor(
    private readonly session: ModelSession,
    readonly graph: TrainingGraph,
  ) {}

  static async open(graph: TrainingGraph, device: Device, threads?: number): Promise<TrainingSession> {
    return new TrainingSession(await ModelSession.open(graph.path, { device, threads }), graph);
  }

  /** Forward, loss and backward for one batch with the given weights. */
  async step(
    batch: TrainBatch,
    teacherLogits: Float32Array,
    weights: Map<string, Float32Array>,
    vocab: number,
    teacherHidden: Float32Array[] = [],
  ): Promise<StepResult> {
    const { B, S } = batch;
    const feeds: Record<string, Tensor> = {
      ...tokenFeeds(batch),
      [TRAIN_IO.teacherLogits]: new Tensor('float32', teacherLogits, [B, S, vocab]),
      [TRAIN_IO.labels]: new Tensor('int64', batch.labels, [B, S]),
      [TRAIN_IO.lossMask]: new Tensor('float32', batch.mask, [B, S]),
    };
    teacherHidden.forEach((h, k) => (feeds[TRAIN_IO.teacherHidden(k)] = new Tensor('float32', h, [B, S, h.length / (B * S)])));
    for (const [name, p] of this.graph.parameters) feeds[name] = new Tensor('float32', weights.get(name)!, p.dims);
    const fetches: Record<string, null> = { [TRAIN_IO.loss]: null, [TRAIN_IO.kl]: null, [TRAIN_IO.ce]: null };
    if (teacherHidden.length) fetches[TRAIN_IO.hiddenMse] = null;
    for (const name of this.graph.parameters.keys()) fetches[TRAIN_IO.grad(name)] = null;
    const out = await this.session.run(feeds, fetches);
    const scalar = (n: string) => (out[n]!.data as Float32Array)[0]!;
    const grads = new Map<string, Float32Array>();
    for (const name of this.graph.parameters.keys()) grads.set(name, out[TRAIN_IO.grad(name)]!.data as Float32Array);
    return {
      loss: scalar(TRAIN_IO.loss),
      kl: scalar(TRAIN_IO.kl),
      ce: scalar(TRAIN_IO.ce),
      hiddenMse: teacherHidden.length ? scalar(TRAIN_IO.hiddenMse) : null,
      grads,
    };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
