// export: Hugging Face checkpoint -> ONNX artifact folder (decoder with KV cache, external weights),
// streaming one tensor at a time, written atomically.
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { InputError } from '../core/errors.js';
import { GraphBuilder, encodeModel } from '../formats/onnx/graph.js';
import { ExternalDataWriter } from '../formats/onnx/external-data.js';
import { assertGraphValid } from '../formats/onnx/check.js';
import { TOKENIZER_FILES } from '../formats/tokenizer.js';
import { TOOL_VERSION, priorPasses, writeManifest, type ArtifactManifest, type PassRecord } from '../formats/artifact.js';
import { writeOutputDir } from '../formats/output-dir.js';
import { openHfModel } from '../model/checkpoint.js';
import { buildDecoderGraph, weightTensorCount, type EmbeddingEmitter } from '../model/decoder.js';
import { ATTENTION, ATTENTION_FORMS, type AttentionForm } from '../core/io.js';
import { parameterCount, type DecoderSpec } from '../core/spec.js';
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
  const model = await openHfModel(source);
  const { spec } = model;
  const opset = opts.opset ?? 17;
  try {
    checkAttentionForm(spec, opts.attention, source);
    if (opts.layout === 'transformers.js' && !ATTENTION[opts.attention].transformersJs) {
      const hint = `transformers.js runs --attention ${ATTENTION_FORMS.filter((f) => ATTENTION[f].transformersJs).join(' or ')}`;
      throw new InputError(`--attention ${opts.attention}: its cache inputs are llmopt's own; ${hint}`);
    }
    return await writeOutputDir(output, async (tmp) => {
      const onnxDir = opts.layout === 'transformers.js' ? join(tmp, 'onnx') : tmp;
      mkdirSync(onnxDir, { recursive: true });
      const dataName = opts.layout === 'transformers.js' ? 'model.onnx_data' : 'model.onnx.data';
      const data = new ExternalDataWriter(join(onnxDir, dataName), dataName);
      const g = new GraphBuilder(data);
      const total = weightTensorCount(spec);
      let done = 0;
      try {
        await buildDecoderGraph(g, spec, model.weights, {
          attention: opts.attention,
          linear: opts.linear,
          embedding: opts.embedding,
          onTensor: () => opts.onProgress?.(++done, total),
        });
      } finally {
        data.close();
      }
      const bytes = encodeModel(g, 'llmopt_decoder', { opset, producerVersion: TOOL_VERSION });
      // A graph that fails our structural check is a builder bug: never hand it to a user.
      assertGraphValid(bytes);
      writeFileSync(join(onnxDir, 'model.onnx'), bytes);

      const config = JSON.parse(readFileSync(join(source, 'config.json'), 'utf8'));
      if (opts.layout === 'transformers.js') config['transformers.js_config'] = { use_external_data_format: true, dtype: 'fp32' };
      writeFileSync(join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
      for (const f of ['generation_config.json', ...TOKENIZER_FILES]) if (existsSync(join(source, f))) copyFileSync(join(source, f), join(tmp, f));

      const manifest: ArtifactManifest = {
        format: 'llmopt-artifact',
        formatVersion: 1,
        tool: { name: 'llmopt', version: TOOL_VERSION },
        source: { path: resolve(source), configSha256: createHash('sha256').update(readFileSync(join(source, 'config.json'))).digest('hex') },
        model: {
          file: opts.layout === 'transformers.js' ? 'onnx/model.onnx' : 'model.onnx',
          dataFile: opts.layout === 'transformers.js' ? 'onnx/model.onnx_data' : 'model.onnx.data',
          attention: opts.attention,
          precision: opts.precision ?? 'float32',
          opset,
        },
        passes: [...priorPasses(source), ...(opts.passes ?? []), { pass: 'export', options: { attention: opts.attention, layout: opts.layout, opset }, at: new Date().toISOString() }],
      };
      writeManifest(tmp, manifest);
      return {
        output,
        attention: opts.attention,
        layout: opts.layout,
        parameters: parameterCount(spec),
        modelBytes: bytes.byteLength,
        dataBytes: statSync(join(onnxDir, dataName)).size,
        seconds: (Date.now() - started) / 1000,
      };
    });
  } finally {
    await model.close();
  }
}
