// Quantization-aware distillation: the weights the training graph sees are the ones `llmopt quantize --to int4|int8`
// would write (round-to-nearest on MatMulNBits' blocks), and the gradients reach the float weights straight through.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { dequantize, type BlockQuantConfig } from '../../core/block-quant.js';
import { readJsonFile } from '../../formats/hf-config.js';
import { EMBED_TOKENS, LM_HEAD, type DecoderSpec } from '../../core/spec.js';
import { quantizeRtn } from './blockwise.js';
import { linearModules } from '../targets.js';

export const QAT_TARGETS = ['int4', 'int8'] as const;
export type QatTarget = (typeof QAT_TARGETS)[number];

/** The scheme a student is trained for: the layers' bits and blocks, and the embedding / lm_head bits (null: float). */
export interface QatScheme {
  to: QatTarget;
  blockSize: number;
  symmetric: boolean;
  embeddingBits: 8 | null;
}

/**
 * The scheme `llmopt quantize --to <to>` writes by default on the CPU: the embedding and lm_head at 8 bits, int8's
 * blocks with zero points (quantize's "Quantization defaults"); `floatEmbeddings` keeps the embeddings in float,
 * `asymmetric` gives int4's blocks zero points too.
 */
export function qatScheme(to: QatTarget, blockSize: number, asymmetric: boolean, floatEmbeddings: boolean): QatScheme {
  return { to, blockSize, symmetric: to === 'int4' && !asymmetric, embeddingBits: floatEmbeddings ? null : 8 };
}

/** The `llmopt quantize` options that write a scheme, e.g. `--to int4 --block-size 64`. */
export function quantizeFlags(s: QatScheme): string {
  // The CPU defaults' symmetry: int4 symmetric, int8 asymmetric (folders trained before 2026-12-01 hold symmetric int8).
  const symmetricByDefault = s.to === 'int4';
  return [
    `--to ${s.to}`,
    s.blockSize !== 32 ? `--block-size ${s.blockSize}` : '',
    s.symmetric === symmetricByDefault ? '' : s.symmetric ? '--symmetric' : '--asymmetric',
    s.embeddingBits === null ? '--float-embeddings' : '',
  ]
    .filter(Boolean)
    .join(' ');
}

/** The scheme a folder's student was trained through (config.json's llmopt_distill record); null for any other source. */
export function trainedScheme(source: string): QatScheme | null {
  const file = join(source, 'config.json');
  if (!existsSync(file)) return null;
  const record = readJsonFile(file).llmopt_distill as { quantizeAware?: QatScheme | null } | undefined;
  return record?.quantizeAware ?? null;
}

/**
 * Why quantizing a quantization-aware student this way loses what its training won back, or null when it rounds
 * exactly as the training did (round-to-nearest, min/max blocks, the same bits, blocks and embeddings).
 */
export function qatMismatch(
  trained: QatScheme,
  used: {
    to: string;
    format: string;
    method: string;
    clip: string;
    mix: string;
    blockSize: number;
    symmetric: boolean;
    embeddingBits: number | null;
  },
): string | null {
  const differs: string[] = [];
  if (used.format !== 'onnx') differs.push(`--format ${used.format} (another rounding grid)`);
  if (used.to !== trained.to) differs.push(`--to ${used.to}`);
  if (used.method !== 'rtn') differs.push(`--method ${used.method}`);
  if (used.clip !== 'minmax') differs.push(`--clip ${used.clip}`);
  if (used.mix !== 'none') differs.push(`--mix ${used.mix}`);
  if (used.blockSize !== trained.blockSize) differs.push(`--block-size ${used.blockSize}`);
  if (used.symmetric !== trained.symmetric) differs.push(used.symmetric ? 'symmetric blocks' : '--asymmetric');
  if (used.embeddingBits !== trained.embeddingBits)
    differs.push(used.embeddingBits ? `embedding and lm_head at ${used.embeddingBits} bits` : 'embedding and lm_head in float');
  if (differs.length === 0) return null;
  return (
    `trained quantization-aware for \`quantize ${quantizeFlags(trained)}\`; ${differs.join(', ')} rounds it differently, ` +
    'which undoes part of what the training won back'
  );
}

interface Rounded {
  rows: number;
  cols: number;
  cfg: BlockQuantConfig;
  /** The rounded values, rewritten at each call: one buffer per tensor, not one per training step. */
  out: Float32Array;
}

/**
 * Rounds the tensors a scheme quantizes: every q/k/v/o/gate/up/down projection (rows = out features, blocks along the
 * input), and the embedding table and lm_head when the scheme quantizes them (a tied table once, as both the gather and
 * the head read one copy of its codes).
 */
export class FakeQuantizer {
  private readonly rounded = new Map<string, Rounded>();

  constructor(
    spec: DecoderSpec,
    readonly scheme: QatScheme,
  ) {
    const layer: BlockQuantConfig = { bits: scheme.to === 'int4' ? 4 : 8, blockSize: scheme.blockSize, symmetric: scheme.symmetric };
    const add = (name: string, rows: number, cols: number, cfg: BlockQuantConfig) =>
      this.rounded.set(name, { rows, cols, cfg, out: new Float32Array(rows * cols) });
    for (const m of linearModules(spec)) add(`${m.module}.weight`, m.rows, m.cols, layer);
    if (scheme.embeddingBits) {
      const head: BlockQuantConfig = { ...layer, bits: scheme.embeddingBits };
      add(EMBED_TOKENS, spec.vocabSize, spec.hiddenSize, head);
      if (!spec.tiedEmbeddings) add(LM_HEAD, spec.vocabSize, spec.hiddenSize, head);
    }
  }

  /** Names of the tensors rounded, for the record. */
  names(): string[] {
    return [...this.rounded.keys()];
  }

  /**
   * The weights with each rounded tensor replaced by its dequantized codes (in this quantizer's buffers, overwritten by
   * the next call: use or write them before then; the float weights, which the optimizer updates, are untouched).
   * Straight-through: the gradient with respect to the rounded tensor is applied to
   * the float one as if rounding were the identity (Bengio et al. 2013; LLM-QAT, Liu et al. 2023).
   */
  apply(weights: ReadonlyMap<string, Float32Array>): Map<string, Float32Array> {
    const out = new Map(weights);
    for (const [name, r] of this.rounded) {
      const w = weights.get(name);
      if (!w) throw new Error(`quantization-aware training: the training graph has no parameter ${name}`);
      out.set(name, dequantize(quantizeRtn(w, r.rows, r.cols, r.cfg), r.out));
    }
    return out;
  }
}
