// Layer-by-layer calibration for GPTQ, SparseGPT and Wanda: calibration text is embedded once, then
// each decoder layer runs as its own small graph on the hidden states that came out of the already
// compressed layers before it. Per layer it yields, for every linear layer's input, the Gram matrix
// X^T X over the valid tokens (computed by onnxruntime), and then advances the hidden states through
// the layer's compressed weights.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { GraphBuilder, encodeModel } from '../formats/onnx/graph.js';
import { ExternalDataWriter } from '../formats/onnx/external-data.js';
import { writeFileSync } from 'node:fs';
import { loadEvalWindows } from '../eval/dataset.js';
import type { TextTokenizer } from '../formats/tokenizer.js';
import { CAPTURE_NAMES, gramOutput, io, type CaptureName } from '../core/io.js';
import { buildBlockGraph } from '../model/decoder.js';
import { EMBED_TOKENS, type DecoderSpec } from '../core/spec.js';
import type { WeightSource } from '../core/weights.js';
import { ModelSession, Tensor } from '../runtime/session.js';

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
    if (e instanceof InputError && /no text to evaluate/.test(e.message)) throw new InputError(`${path}: calibration file has no text (one document per line)`);
    throw e;
  }
  return { path, windows: windows.slice(0, samples) };
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
