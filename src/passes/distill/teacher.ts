// The teacher's forward pass for the hidden-state loss: its cacheless graph (the export's builder,
// standard attention) with each layer's output exposed, so one run yields the logits and the hidden
// states the student's layers are matched to.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GraphBuilder, encodeModel } from '../../formats/onnx/graph.js';
import { ExternalDataWriter } from '../../formats/onnx/external-data.js';
import { io } from '../../core/io.js';
import { buildCachelessGraph } from '../../model/decoder.js';
import type { DecoderSpec } from '../../core/spec.js';
import type { WeightSource } from '../../core/weights.js';
import { ModelSession } from '../../runtime/session.js';
import type { Device } from '../../runtime/device.js';
import { tokenFeeds, type TrainBatch } from './trainer.js';

export class TeacherForward {
  private constructor(
    private readonly session: ModelSession,
    readonly layers: number[],
  ) {}

  /** Builds the graph into `dir` and opens it; `layers` are the teacher layers whose outputs are returned. */
  static async open(
    dir: string,
    spec: DecoderSpec,
    weights: WeightSource,
    layers: number[],
    device: Device,
    threads?: number,
  ): Promise<TeacherForward> {
    const data = new ExternalDataWriter(join(dir, 'teacher.onnx.data'), 'teacher.onnx.data');
    const g = new GraphBuilder(data);
    try {
      await buildCachelessGraph(g, spec, weights, { hiddenStates: true });
    } finally {
      data.close();
    }
    writeFileSync(join(dir, 'teacher.onnx'), encodeModel(g, 'llmopt_teacher', { opset: 17, producerVersion: 'distill' }));
    return new TeacherForward(await ModelSession.open(join(dir, 'teacher.onnx'), { device, threads }), layers);
  }

  async run(batch: TrainBatch): Promise<{ logits: Float32Array; hidden: Float32Array[] }> {
    const fetches: Record<string, null> = { [io.logits]: null };
    for (const l of this.layers) fetches[io.hiddenLayer(l)] = null;
    const out = await this.session.run(tokenFeeds(batch), fetches);
    return { logits: out[io.logits]!.data as Float32Array, hidden: this.layers.map((l) => out[io.hiddenLayer(l)]!.data as Float32Array) };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
