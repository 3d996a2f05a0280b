// Layer-by-layer calibration for GPTQ, SparseGPT and Wanda: calibration text is embedded once, then
// each decoder layer runs as its own small graph on the hidden states that came out of the already
// compressed layers before it. Per layer it yields, for every linear layer's input, the Gram matrix
// X^T X over the valid tokens (computed by onnxruntime), and then advances the hidden states through
// the layer's compressed weights. calibrateLayerwise is the one loop the methods plug into.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { GraphBuilder, encodeModel } from '../formats/onnx/graph.js';
import { ExternalDataWriter } from '../formats/onnx/external-data.js';
import { writeFileSync } from 'node:fs';
import { loadEvalWindows } from '../eval/dataset.js';
import { loadTokenizer, type TextTokenizer } from '../formats/tokenizer.js';
import { CAPTURE_NAMES, gramOutput, io, type CaptureName } from '../core/io.js';
import { buildBlockGraph } from '../model/decoder.js';
import { EMBED_TOKENS, type DecoderSpec } from '../core/spec.js';
import { overlayWeights, type WeightSource } from '../core/weights.js';
import { ModelSession, Tensor } from '../runtime/session.js';
import type { LinearModule } from './targets.js';

export interface CalibrationSet {
  path: string;
  /** Token windows, each starting with <s>, at most seqLen long. */
  windows: number[][];
}

/** Reads `--calib` text: one document per line, cut into windows of seqLen; the first `samples` windows. */
export function loadCalibration(path: string, tokenizer: TextTokenizer, samples: number, seqLen: number): CalibrationSet {
  let windows: number[][];
  try {
    windows = loadEvalWindows(path, tokenizer, seqLen).map((w) => w.ids);
  } catch (e) {
    if (e instanceof InputError && /no text to evaluate/.test(e.message))
      throw new InputError(`${path}: calibration file has no text (one document per line)`);
    throw e;
  }
  return { path, windows: windows.slice(0, samples) };
}

/**
 * Reads `--calib` for the model in `modelDir` with its tokenizer: the first `samples` windows (default
 * 128) of at most `seqLen` tokens (default 128, or the context when shorter). No text is bad input.
 */
export function loadModelCalibration(
  path: string,
  modelDir: string,
  spec: DecoderSpec,
  samples = 128,
  seqLen = Math.min(128, spec.maxPositions),
): CalibrationSet {
  const set = loadCalibration(path, loadTokenizer(modelDir), samples, seqLen);
  if (set.windows.length === 0) throw new InputError(`${path}: calibration file has no text`);
  return set;
}

/** Input statistics of one linear-layer input: sum of x x^T over `tokens` valid tokens. */
export interface InputStatistics {
  gram: Float64Array; // [F, F]
  features: number;
  tokens: number;
}

interface Batch {
  rows: number;
  seq: number;
  hidden: Float32Array; // [B, S, h]
  mask: BigInt64Array; // [B, S]
  positions: BigInt64Array; // [B, S]
  tokens: number;
}

export class LayerwiseCalibration {
  private constructor(
    readonly spec: DecoderSpec,
    private batches: Batch[],
    private readonly work: string,
  ) {}

  /** Embeds the calibration windows (right-padded batches of `batchSize`). */
  static async start(spec: DecoderSpec, weights: WeightSource, set: CalibrationSet, batchSize: number): Promise<LayerwiseCalibration> {
    if (set.windows.length === 0) throw new InputError(`${set.path}: no calibration windows`);
    const h = spec.hiddenSize;
    const embed = await weights.readFloat32(EMBED_TOKENS); // [V, h]
    const batches: Batch[] = [];
    for (let i = 0; i < set.windows.length; i += batchSize) {
      const rows = set.windows.slice(i, i + batchSize);
      const S = Math.max(...rows.map((r) => r.length));
      const B = rows.length;
      const hidden = new Float32Array(B * S * h);
      const mask = new BigInt64Array(B * S);
      const positions = new BigInt64Array(B * S);
      let tokens = 0;
      rows.forEach((ids, b) => {
        for (let s = 0; s < S; s++) {
          positions[b * S + s] = BigInt(s);
          if (s >= ids.length) continue;
          mask[b * S + s] = 1n;
          tokens++;
          hidden.set(embed.subarray(ids[s]! * h, (ids[s]! + 1) * h), (b * S + s) * h);
        }
      });
      batches.push({ rows: B, seq: S, hidden, mask, positions, tokens });
    }
    return new LayerwiseCalibration(spec, batches, mkdtempSync(join(tmpdir(), 'llmopt-calib-')));
  }

  get tokens(): number {
    return this.batches.reduce((a, b) => a + b.tokens, 0);
  }

  private async blockSession(layer: number, weights: WeightSource, captures: 'gram' | 'none'): Promise<ModelSession> {
    const dir = mkdtempSync(join(this.work, `layer${layer}-`));
    const data = new ExternalDataWriter(join(dir, 'block.onnx.data'), 'block.onnx.data');
    const g = new GraphBuilder(data);
    try {
      await buildBlockGraph(g, this.spec, weights, layer, { captures });
    } finally {
      data.close();
    }
    writeFileSync(join(dir, 'block.onnx'), encodeModel(g, `llmopt_block_${layer}`, { opset: 17, producerVersion: 'calibration' }));
    return ModelSession.open(join(dir, 'block.onnx'), { device: 'cpu' });
  }

  private feeds(b: Batch): Record<string, Tensor> {
    return {
      [io.hiddenStates]: new Tensor('float32', b.hidden, [b.rows, b.seq, this.spec.hiddenSize]),
      [io.attentionMask]: new Tensor('int64', b.mask, [b.rows, b.seq]),
      [io.positionIds]: new Tensor('int64', b.positions, [b.rows, b.seq]),
    };
  }

  /** Gram matrices of the inputs of `layer`'s linear layers, with `weights` for that layer. */
  async statistics(layer: number, weights: WeightSource): Promise<Map<CaptureName, InputStatistics>> {
    const session = await this.blockSession(layer, weights, 'gram');
    const stats = new Map<CaptureName, InputStatistics>();
    try {
      for (const b of this.batches) {
        const out = await session.run(this.feeds(b), Object.fromEntries(CAPTURE_NAMES.map((c) => [gramOutput(layer, c), null])));
        for (const c of CAPTURE_NAMES) {
          const t = out[gramOutput(layer, c)]!;
          const g = t.data as Float32Array;
          let s = stats.get(c);
          if (!s) stats.set(c, (s = { gram: new Float64Array(g.length), features: t.dims[0]!, tokens: 0 }));
          for (let i = 0; i < g.length; i++) s.gram[i]! += g[i]!;
          s.tokens += b.tokens;
        }
      }
    } finally {
      await session.release();
    }
    return stats;
  }

  /** Moves the hidden states through `layer` with its (compressed) `weights`. */
  async advance(layer: number, weights: WeightSource): Promise<void> {
    const session = await this.blockSession(layer, weights, 'none');
    try {
      for (const b of this.batches) {
        const out = await session.run(this.feeds(b), { [io.hiddenStatesOut]: null });
        b.hidden = out[io.hiddenStatesOut]!.data as Float32Array;
      }
    } finally {
      await session.release();
    }
  }

  close(): void {
    rmSync(this.work, { recursive: true, force: true });
  }
}

/** What a method needs of a linear layer's inputs: the Hessian X^T X (GPTQ, SparseGPT) or the squared norms of its columns (Wanda). */
export type CalibrationStatistic = 'hessian' | 'norms';

/** One linear layer's calibration inputs, over `tokens` valid tokens. */
export interface LayerInputs {
  /** sum over tokens of x x^T, [F, F] ('hessian' only). */
  hessian: Float64Array | null;
  /** sum over tokens of x_j^2, [F] (the Hessian's diagonal; 'norms' only). */
  norms: Float64Array | null;
  tokens: number;
}

/** A layer-by-layer compression method (GPTQ, SparseGPT, Wanda, AWQ). */
export interface LayerwiseMethod {
  statistic: CalibrationStatistic;
  /** Compresses one linear layer: its float32 weight [rows, cols] in; out, the weight later layers see. */
  compress(target: LinearModule, w: Float32Array, inputs: LayerInputs): Float32Array;
  /**
   * After each decoder layer with targets: their new weights (prune stages them to disk). The map is what the next
   * layers' inputs go through: a method may replace entries and add float tensors it changed (AWQ's folded norms).
   */
  layerDone?(layer: number, targets: LinearModule[], compressed: Map<string, Float32Array>): Promise<void>;
}

export interface LayerwiseOptions {
  /** Calibration windows per batch (default 8). */
  batchSize?: number;
  /**
   * Calibrate each layer on inputs that went through the already-compressed layers (true, the default,
   * as the GPTQ, Wanda and SparseGPT reference code do) or on the dense model's activations (false).
   */
  sequential?: boolean;
  /** (decoder layers done, decoder layers). */
  onProgress?: (done: number, total: number) => void;
}

function layerInputs(s: InputStatistics, statistic: CalibrationStatistic): LayerInputs {
  if (statistic === 'hessian') return { hessian: s.gram, norms: null, tokens: s.tokens };
  const F = s.features;
  const norms = new Float64Array(F);
  for (let j = 0; j < F; j++) norms[j] = s.gram[j * F + j]!;
  return { hessian: null, norms, tokens: s.tokens };
}

/**
 * Runs `method` over `targets`, decoder layer by decoder layer: each layer's statistics come from its
 * dense weights on the current hidden states, then the hidden states advance through the compressed
 * layer (or the dense one when not sequential). Returns the calibration tokens counted.
 */
export async function calibrateLayerwise(
  spec: DecoderSpec,
  weights: WeightSource,
  set: CalibrationSet,
  targets: LinearModule[],
  method: LayerwiseMethod,
  opts: LayerwiseOptions = {},
): Promise<{ tokens: number }> {
  const calib = await LayerwiseCalibration.start(spec, weights, set, opts.batchSize ?? 8);
  try {
    for (let layer = 0; layer < spec.numLayers; layer++) {
      const inLayer = targets.filter((t) => t.layer === layer);
      const compressed = new Map<string, Float32Array>();
      if (inLayer.length) {
        const stats = await calib.statistics(layer, weights);
        for (const t of inLayer) {
          const w = await weights.readFloat32(`${t.module}.weight`);
          compressed.set(`${t.module}.weight`, method.compress(t, w, layerInputs(stats.get(t.capture)!, method.statistic)));
        }
        await method.layerDone?.(layer, inLayer, compressed);
      }
      if (layer + 1 < spec.numLayers) await calib.advance(layer, opts.sequential === false ? weights : overlayWeights(weights, compressed));
      opts.onProgress?.(layer + 1, spec.numLayers);
    }
    return { tokens: calib.tokens };
  } finally {
    calib.close();
  }
}
