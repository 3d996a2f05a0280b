// --mix auto's measurement: each candidate tensor's KL contribution, quantized alone (every other weight float),
// on calibration windows. One cacheless graph serves every measurement: each candidate's weight is
// W + s_low * (Q_low(W) - W) + s_high * (Q_high(W) - W) with the s as graph inputs, so a run per setting, one build.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from '../../core/io.js';
import type { DecoderSpec } from '../../core/spec.js';
import { transpose2d, type WeightSource } from '../../core/weights.js';
import { klDivergence, logSoftmax } from '../../eval/metrics.js';
import { ExternalDataWriter } from '../../formats/onnx/external-data.js';
import { Elem, encodeModel, GraphBuilder } from '../../formats/onnx/graph.js';
import { buildCachelessGraph } from '../../model/decoder.js';
import { addBias, f32bytes, floatLinear, type LinearEmitter } from '../../model/linear.js';
import { ModelSession, Tensor } from '../../runtime/session.js';
import type { CalibrationSet } from '../calibration.js';

/** The graph input holding the candidates' switches: [2 * candidates], low then high for each. */
const SELECT = 'mix_select';

/** One tensor whose sensitivity is measured: an [rows, cols] linear weight. */
export interface SensitivityCandidate {
  module: string;
  rows: number;
  cols: number;
}

/** Mean KL(float || model) per predicted token with one candidate at each level, the others float. */
export interface Sensitivity {
  low: number;
  high: number;
}

export interface SensitivityOptions {
  /** Windows measured (the first ones of the calibration set). */
  windows: number;
  /** The dequantized weight at a level: what the quantizer will store, as floats. */
  fakeQuantize: (candidate: SensitivityCandidate, w: Float32Array, level: 'low' | 'high') => Float32Array;
  onProgress?: (done: number, total: number) => void;
}

function difference(q: Float32Array, w: Float32Array, rows: number, cols: number): Uint8Array {
  const d = new Float32Array(q.length);
  for (let i = 0; i < d.length; i++) d[i] = q[i]! - w[i]!;
  return f32bytes(transpose2d(d, rows, cols));
}

/** The linear emitter of the measuring graph: candidates get their switchable weight, the rest float MatMul. */
function switchableLinear(
  candidates: Map<string, number>,
  o: SensitivityOptions,
  byModule: Map<string, SensitivityCandidate>,
): LinearEmitter {
  return async (g, weights, layer, x) => {
    const index = candidates.get(layer.module);
    if (index === undefined) return floatLinear(g, weights, layer, x);
    const c = byModule.get(layer.module)!;
    const w = await weights.readFloat32(`${layer.module}.weight`);
    const dims = [layer.inFeatures, layer.outFeatures];
    const base = g.initializer(`${layer.module}.weight`, Elem.FLOAT, dims, f32bytes(transpose2d(w, c.rows, c.cols)));
    let sum = base;
    for (const [k, level] of (['low', 'high'] as const).entries()) {
      const delta = g.initializer(
        `${layer.module}.delta_${level}`,
        Elem.FLOAT,
        dims,
        difference(o.fakeQuantize(c, w, level), w, c.rows, c.cols),
      );
      const at = g.constant(`/const/mix_index_${2 * index + k}`, Elem.INT64, [1], [2 * index + k]);
      const s = g.op('Gather', [SELECT, at], `${layer.path}/select_${level}/Gather`);
      const scaled = g.op('Mul', [delta, s], `${layer.path}/select_${level}/Mul`);
      sum = g.op('Add', [sum, scaled], `${layer.path}/select_${level}/Add`);
    }
    return addBias(g, weights, layer, g.op('MatMul', [x, sum], `${layer.path}/MatMul`));
  };
}

/** Windows of one length batched together (no padding, so every token is a real one). */
function batches(set: CalibrationSet, windows: number, maxRows = 4): number[][][] {
  const byLength = new Map<number, number[][]>();
  for (const w of set.windows.slice(0, windows)) {
    if (w.length < 2) continue;
    const group = byLength.get(w.length) ?? [];
    group.push(w);
    byLength.set(w.length, group);
  }
  const out: number[][][] = [];
  for (const group of byLength.values()) for (let i = 0; i < group.length; i += maxRows) out.push(group.slice(i, i + maxRows));
  return out;
}

function feeds(rows: number[][], select: Float32Array): Record<string, Tensor> {
  const B = rows.length;
  const S = rows[0]!.length;
  const ids = new BigInt64Array(B * S);
  const positions = new BigInt64Array(B * S);
  for (let b = 0; b < B; b++) for (let s = 0; s < S; s++) [ids[b * S + s], positions[b * S + s]] = [BigInt(rows[b]![s]!), BigInt(s)];
  return {
    [io.inputIds]: new Tensor('int64', ids, [B, S]),
    [io.attentionMask]: new Tensor('int64', new BigInt64Array(B * S).fill(1n), [B, S]),
    [io.positionIds]: new Tensor('int64', positions, [B, S]),
    [SELECT]: new Tensor('float32', select, [select.length]),
  };
}

/**
 * Each candidate's KL at the low and at the high level, measured against the float model on the first
 * `o.windows` calibration windows (every position of a window predicts its next token). Memory: the float
 * model, two more float copies of the candidates' weights, and one batch's (4 windows') float log-probabilities.
 */
export async function measureSensitivity(
  spec: DecoderSpec,
  weights: WeightSource,
  set: CalibrationSet,
  candidates: SensitivityCandidate[],
  o: SensitivityOptions,
): Promise<Map<string, Sensitivity>> {
  const work = mkdtempSync(join(tmpdir(), 'llmopt-mix-'));
  const index = new Map(candidates.map((c, i) => [c.module, i]));
  const byModule = new Map(candidates.map((c) => [c.module, c]));
  try {
    const data = new ExternalDataWriter(join(work, 'mix.onnx.data'), 'mix.onnx.data');
    const g = new GraphBuilder(data);
    g.input(SELECT, Elem.FLOAT, [2 * candidates.length]);
    try {
      await buildCachelessGraph(g, spec, weights, { linear: switchableLinear(index, o, byModule) });
    } finally {
      data.close();
    }
    writeFileSync(join(work, 'mix.onnx'), encodeModel(g, 'llmopt_mix_sensitivity', { opset: 17, producerVersion: 'quantize --mix auto' }));
    const session = await ModelSession.open(join(work, 'mix.onnx'), { device: 'cpu' });
    try {
      const groups = batches(set, o.windows);
      const V = spec.vocabSize;
      const run = async (rows: number[][], select: Float32Array) =>
        (await session.run(feeds(rows, select), { [io.logits]: null }))[io.logits]!.data as Float32Array;
      // Batch by batch: the float model's log-probabilities of one batch are held (never all windows' at once),
      // then every switch runs on it. sums[k]: KL summed over tokens with switch k on.
      const switches = 2 * candidates.length;
      const sums = new Float64Array(switches);
      let tokens = 0;
      for (const [b, rows] of groups.entries()) {
        const floatLogits = await run(rows, new Float32Array(switches));
        const n = rows.length * rows[0]!.length;
        const reference = Array.from({ length: n }, (_, t) => logSoftmax(floatLogits.subarray(t * V, (t + 1) * V)));
        for (let k = 0; k < switches; k++) {
          const select = new Float32Array(switches);
          select[k] = 1;
          const logits = await run(rows, select);
          for (let t = 0; t < n; t++) sums[k]! += klDivergence(reference[t]!, logSoftmax(logits.subarray(t * V, (t + 1) * V)));
          o.onProgress?.(b * switches + k + 1, groups.length * switches);
        }
        tokens += n;
      }
      const out = new Map<string, Sensitivity>();
      const mean = (k: number) => (tokens ? sums[k]! / tokens : 0);
      for (const [i, c] of candidates.entries()) out.set(c.module, { low: mean(2 * i), high: mean(2 * i + 1) });
      return out;
    } finally {
      await session.release();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
