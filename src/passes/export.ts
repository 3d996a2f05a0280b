// export: Hugging Face checkpoint -> ONNX artifact folder (decoder with KV cache, external weights),
// written by model/artifact-writer.ts (streamed one tensor at a time, atomically).
import { InputError } from '../errors.js';
import type { PassRecord } from '../formats/manifest.js';
import { writeOnnxArtifact } from '../model/artifact-writer.js';
import type { AttentionForm, EmbeddingEmitter } from '../model/decoder.js';
import type { DecoderSpec } from '../model/spec.js';
import type { LinearEmitter } from '../model/linear.js';

export const LAYOUTS = ['llmopt', 'transformers.js'] as const;
export type Layout = (typeof LAYOUTS)[number];

export interface ExportOptions {
  attention: AttentionForm;
  /** llmopt: model.onnx + model.onnx.data at the top; transformers.js: onnx/model.onnx + onnx/model.onnx_data. */
  layout: Layout;
  opset?: number;
  /** Progress: called with (tensors written, tensors in all). */
  onProgress?: (done: number, total: number) => void;
  /** Passes that change how linear layers are emitted (quantization) supply this. */
  linear?: LinearEmitter;
  /** ... and how the embedding (and a tied lm_head) are emitted. */
  embedding?: EmbeddingEmitter;
  /** Weight precision recorded in the manifest (default float32). */
  precision?: string;
  /** Passes applied before the export, recorded in the manifest ahead of it. */
  passes?: PassRecord[];
}

export interface ExportReport {
  output: string;
  attention: AttentionForm;
  layout: Layout;
  parameters: number;
  modelBytes: number;
  dataBytes: number;
  seconds: number;
}

/** Refuses what an attention form cannot express, before anything is written. */
export function checkAttentionForm(spec: DecoderSpec, form: AttentionForm, source: string): void {
  // GroupQueryAttention's rotary kernels want cos/sin rows of a multiple of 8 (head_dim a multiple of 16).
  if (form === 'fused' && spec.headDim % 16 !== 0) {
    throw new InputError(`${source}: head_dim ${spec.headDim} is not a multiple of 16, which GroupQueryAttention's rotary needs; use --attention standard`);
  }
}

export async function exportModel(source: string, output: string, opts: ExportOptions): Promise<ExportReport> {
  const started = Date.now();
  const check = (spec: DecoderSpec) => {
    checkAttentionForm(spec, opts.attention, source);
    if (opts.attention === 'inplace' && opts.layout === 'transformers.js') throw new InputError('--attention inplace: its cache inputs are llmopt\'s own; transformers.js runs --attention fused or standard');
  };
  const written = await writeOnnxArtifact(source, output, { ...opts, check });
  return {
    output,
    attention: opts.attention,
    layout: opts.layout,
    parameters: written.parameters,
    modelBytes: written.modelBytes,
    dataBytes: written.dataBytes,
    seconds: (Date.now() - started) / 1000,
  };
}
