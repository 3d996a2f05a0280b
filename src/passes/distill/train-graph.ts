// The training graph of a student: the decoder's cacheless forward (built by the export's graph
// builder, with the weights as graph inputs), the distillation loss against teacher logits, and the
// backward pass from autodiff.ts — one ONNX model that returns the loss and every weight's gradient.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Elem, GraphBuilder, encodeModel, type ElemType } from '../../formats/onnx/graph.js';
import { ExternalDataWriter } from '../../formats/onnx/external-data.js';
import { io } from '../../core/io.js';
import { buildCachelessGraph } from '../../model/decoder.js';
import { addBias, type LinearEmitter } from '../../model/linear.js';
import type { DecoderSpec } from '../../core/spec.js';
import type { WeightSource } from '../../core/weights.js';
import { addGradients } from './autodiff.js';

/** A GraphBuilder whose trainable "initializers" become graph inputs; their values are kept as the initial weights. */
class TrainingGraphBuilder extends GraphBuilder {
  readonly parameters = new Map<string, { dims: number[]; values: Float32Array }>();

  constructor(
    data: ExternalDataWriter,
    private readonly trainable: (name: string) => boolean,
  ) {
    super(data);
  }

  override initializer(name: string, elem: ElemType, dims: number[], bytes: Uint8Array): string {
    if (elem !== Elem.FLOAT || !this.trainable(name)) return super.initializer(name, elem, dims, bytes);
    const values = new Float32Array(bytes.byteLength / 4);
    new Uint8Array(values.buffer).set(bytes);
    this.parameters.set(name, { dims, values });
    return this.input(name, Elem.FLOAT, dims);
  }
}

/** Linear layers keep the Hugging Face [out, in] weight as the parameter: y = x W^T + b. */
const trainableLinear: LinearEmitter = async (g, weights, layer, x) => {
  const w = await weights.readFloat32(`${layer.module}.weight`);
  const name = g.initializer(
    `${layer.module}.weight`,
    Elem.FLOAT,
    [layer.outFeatures, layer.inFeatures],
    new Uint8Array(w.buffer, w.byteOffset, w.byteLength),
  );
  const wT = g.op('Transpose', [name], `${layer.path}/WeightT`, { perm: { ints: [1, 0] } });
  return addBias(g, weights, layer, g.op('MatMul', [x, wT], `${layer.path}/MatMul`));
};

export const TRAIN_IO = {
  teacherLogits: 'teacher_logits',
  teacherHidden: (k: number) => `teacher_hidden.${k}`,
  hiddenMse: 'hidden_mse',
  labels: 'labels',
  lossMask: 'loss_mask',
  loss: 'loss',
  kl: 'kl',
  ce: 'ce',
  grad: (param: string) => `grad.${param}`,
};

export interface LossOptions {
  temperature: number;
  /** Weight of next-token cross-entropy on the data. */
  alpha: number;
  /**
   * Hidden-state loss: weight x mean squared difference between student layer s's output and the
   * teacher's layer t's output, over the pairs [s, t] (fed as teacher_hidden.{k}).
   */
  hidden?: { weight: number; pairs: Array<[number, number]> };
}

export interface TrainingGraph {
  path: string;
  /** Trainable parameters in graph-input order, with their initial values (Hugging Face layout). */
  parameters: Map<string, { dims: number[]; values: Float32Array }>;
}

/**
 * loss = T^2 KL(softmax(t/T) || softmax(s/T)) + alpha CE(s, labels) [+ w hidden MSE], averaged over
 * tokens where loss_mask is 1; the gradients on the logits (and hidden states) are given in closed
 * form and seed the backward pass.
 */
function addLoss(g: GraphBuilder, spec: DecoderSpec, logits: string, loss: LossOptions, hiddenSeeds: Map<string, string>): string {
  const p = '/loss';
  const f = (name: string, v: number) => g.constant(`${p}/const/${name}`, Elem.FLOAT, [], [v]);
  const mask3 = g.op('Unsqueeze', [TRAIN_IO.lossMask, g.constant('/loss/const/axes_-1', Elem.INT64, [1], [-1])], `${p}/mask3`); // [B,S,1]
  const count = g.op('ReduceSum', [TRAIN_IO.lossMask], `${p}/count`, { keepdims: { int: 0 } });
  const invT = f('inv_T', 1 / loss.temperature);
  const logq = g.op('LogSoftmax', [g.op('Mul', [logits, invT], `${p}/s_T`)], `${p}/logq_T`, { axis: { int: -1 } });
  const logp = g.op('LogSoftmax', [g.op('Mul', [TRAIN_IO.teacherLogits, invT], `${p}/t_T`)], `${p}/logp_T`, { axis: { int: -1 } });
  const pT = g.op('Exp', [logp], `${p}/p_T`);
  const klTok = g.op(
    'ReduceSum',
    [
      g.op('Mul', [pT, g.op('Sub', [logp, logq], `${p}/logratio`)], `${p}/plogratio`),
      g.constant('/loss/const/axes_-1', Elem.INT64, [1], [-1]),
    ],
    `${p}/kl_tok`,
    { keepdims: { int: 1 } },
  );
  const klSum = g.op('ReduceSum', [g.op('Mul', [klTok, mask3], `${p}/kl_masked`)], `${p}/kl_sum`, { keepdims: { int: 0 } });
  g.node('Mul', [g.op('Div', [klSum, count], `${p}/kl_mean`), f('T2', loss.temperature ** 2)], { name: `${p}/kl`, outputs: [TRAIN_IO.kl] });
  const logsm = g.op('LogSoftmax', [logits], `${p}/logsm`, { axis: { int: -1 } });
  const labels3 = g.op('Unsqueeze', [TRAIN_IO.labels, g.constant('/loss/const/axes_-1', Elem.INT64, [1], [-1])], `${p}/labels3`);
  const picked = g.op('GatherElements', [logsm, labels3], `${p}/picked`, { axis: { int: -1 } }); // [B,S,1]
  const ceSum = g.op('ReduceSum', [g.op('Mul', [picked, mask3], `${p}/ce_masked`)], `${p}/ce_sum`, { keepdims: { int: 0 } });
  g.node('Neg', [g.op('Div', [ceSum, count], `${p}/ce_mean`)], { name: `${p}/ce`, outputs: [TRAIN_IO.ce] });
  const logitLoss = g.op('Add', [TRAIN_IO.kl, g.op('Mul', [TRAIN_IO.ce, f('alpha', loss.alpha)], `${p}/alpha_ce`)], `${p}/logit_loss`);
  if (loss.hidden) {
    // mean over pairs, valid tokens and features of (h_s - h_t)^2; its gradient seeds each student layer output.
    const { weight, pairs } = loss.hidden;
    const scale = g.op('Mul', [count, f('hidden_norm', spec.hiddenSize * pairs.length)], `${p}/hidden_denominator`);
    const terms = pairs.map(([s], k) => {
      const student = io.hiddenLayer(s);
      const gap = g.op('Sub', [student, TRAIN_IO.teacherHidden(k)], `${p}/hidden${k}/diff`);
      const diff = g.op('Mul', [gap, mask3], `${p}/hidden${k}/masked`);
      const scaled = g.op('Mul', [diff, f('hidden_2w', 2 * weight)], `${p}/hidden${k}/dscaled`);
      hiddenSeeds.set(student, g.op('Div', [scaled, scale], `${p}/hidden${k}/grad`));
      return g.op('ReduceSum', [g.op('Mul', [diff, diff], `${p}/hidden${k}/sq`)], `${p}/hidden${k}/sum`, { keepdims: { int: 0 } });
    });
    const mse = g.op('Div', [terms.length > 1 ? g.op('Sum', terms, `${p}/hidden/sum`) : terms[0]!, scale], `${p}/hidden/mean`);
    g.node('Identity', [mse], { name: `${p}/hidden_mse`, outputs: [TRAIN_IO.hiddenMse] });
    g.node('Add', [logitLoss, g.op('Mul', [mse, f('hidden_w', weight)], `${p}/hidden/weighted`)], {
      name: `${p}/total`,
      outputs: [TRAIN_IO.loss],
    });
  } else g.node('Identity', [logitLoss], { name: `${p}/total`, outputs: [TRAIN_IO.loss] });

  // dL/ds = [T (softmax(s/T) - softmax(t/T)) + alpha (softmax(s) - onehot(label))] * mask / count
  const dKl = g.op('Mul', [g.op('Sub', [g.op('Exp', [logq], `${p}/q_T`), pT], `${p}/q_minus_p`), f('T', loss.temperature)], `${p}/dkl`);
  const onehot = g.op(
    'OneHot',
    [
      TRAIN_IO.labels,
      g.constant('/loss/const/depth', Elem.INT64, [], [spec.vocabSize]),
      g.constant('/loss/const/onehot_values', Elem.FLOAT, [2], [0, 1]),
    ],
    `${p}/onehot`,
    { axis: { int: -1 } },
  );
  const dCe = g.op(
    'Mul',
    [g.op('Sub', [g.op('Exp', [logsm], `${p}/sm`), onehot], `${p}/sm_minus_onehot`), f('alpha_grad', loss.alpha)],
    `${p}/dce`,
  );
  return g.op('Div', [g.op('Mul', [g.op('Add', [dKl, dCe], `${p}/dsum`), mask3], `${p}/dmasked`), count], `${p}/dlogits`);
}

/** Builds the training graph of `spec` with `weights` as initial values into `dir`/train.onnx. */
export async function buildTrainingGraph(
  dir: string,
  spec: DecoderSpec,
  weights: WeightSource,
  trainable: (name: string) => boolean,
  loss: LossOptions,
): Promise<TrainingGraph> {
  const data = new ExternalDataWriter(join(dir, 'train.onnx.data'), 'train.onnx.data');
  const g = new TrainingGraphBuilder(data, trainable);
  try {
    await buildCachelessGraph(g, spec, weights, { linear: trainableLinear, hiddenStates: Boolean(loss.hidden) });
    g.input(TRAIN_IO.teacherLogits, Elem.FLOAT, ['batch_size', 'sequence_length', spec.vocabSize]);
    loss.hidden?.pairs.forEach((_, k) =>
      g.input(TRAIN_IO.teacherHidden(k), Elem.FLOAT, ['batch_size', 'sequence_length', spec.hiddenSize]),
    );
    g.input(TRAIN_IO.labels, Elem.INT64, ['batch_size', 'sequence_length']);
    g.input(TRAIN_IO.lossMask, Elem.FLOAT, ['batch_size', 'sequence_length']);
    const hiddenSeeds = new Map<string, string>();
    const dlogits = addLoss(g, spec, io.logits, loss, hiddenSeeds);
    for (const name of [TRAIN_IO.loss, TRAIN_IO.kl, TRAIN_IO.ce, ...(loss.hidden ? [TRAIN_IO.hiddenMse] : [])])
      g.output(name, Elem.FLOAT, []);
    const names = [...g.parameters.keys()];
    const grads = addGradients(g, new Map([[io.logits, dlogits], ...hiddenSeeds]), names);
    for (const name of names) {
      g.node('Identity', [grads.get(name)!], { name: `/grad_out/${name}`, outputs: [TRAIN_IO.grad(name)] });
      g.output(TRAIN_IO.grad(name), Elem.FLOAT, g.parameters.get(name)!.dims);
    }
  } finally {
    data.close();
  }
  const path = join(dir, 'train.onnx');
  writeFileSync(path, encodeModel(g, 'llmopt_training', { opset: 17, producerVersion: 'distill' }));
  return { path, parameters: g.parameters };
}
