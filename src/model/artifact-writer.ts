// Writes an ONNX artifact from a Hugging Face folder: the decoder graph (streamed one tensor at a time
// into external data), config.json, and the tokenizer and manifest through the model-folder writer.
// Below passes/, so that export, quantize and `eval --reference` share it.
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GraphBuilder, encodeModel } from '../formats/onnx/graph.js';
import { ExternalDataWriter } from '../formats/onnx/external-data.js';
import { assertGraphValid } from '../formats/onnx/check.js';
import { TOOL_VERSION, passRecord, type PassRecord } from '../formats/manifest.js';
import { writeModelFolder } from '../formats/model-folder.js';
import { openHfModel } from './checkpoint.js';
import { buildDecoderGraph, weightTensorCount, type EmbeddingEmitter } from './decoder.js';
import type { AttentionForm } from '../core/io.js';
import { parameterCount, type DecoderSpec } from '../core/spec.js';
import type { LinearEmitter } from './linear.js';

/** llmopt: model.onnx + model.onnx.data at the top; transformers.js: onnx/model.onnx + onnx/model.onnx_data. */
export type ArtifactLayout = 'llmopt' | 'transformers.js';

/** What passes that emit weights differently (quantization) and progress reporting hook into. */
export interface ArtifactHooks {
  /** Progress: called with (tensors written, tensors in all). */
  onProgress?: (done: number, total: number) => void;
  /** How linear layers are emitted (quantization supplies this; float32 MatMul by default). */
  linear?: LinearEmitter;
  /** ... and the embedding (and a tied lm_head). */
  embedding?: EmbeddingEmitter;
  /** Weight precision recorded in the manifest (default float32). */
  precision?: string;
  /** Passes applied before the export, recorded in the manifest ahead of it. */
  passes?: PassRecord[];
}

export interface ArtifactOptions extends ArtifactHooks {
  attention: AttentionForm;
  layout: ArtifactLayout;
  opset?: number;
  /** Checks on the opened spec before anything is written (the attention form's limits). */
  check?: (spec: DecoderSpec) => void;
}

export interface ArtifactWritten {
  spec: DecoderSpec;
  parameters: number;
  modelBytes: number;
  dataBytes: number;
}

/** Writes the artifact of Hugging Face folder `source` into `output` (atomically; see writeModelFolder). */
export async function writeOnnxArtifact(source: string, output: string, opts: ArtifactOptions): Promise<ArtifactWritten> {
  const model = await openHfModel(source);
  const { spec } = model;
  const opset = opts.opset ?? 17;
  const jsLayout = opts.layout === 'transformers.js';
  const dataName = jsLayout ? 'model.onnx_data' : 'model.onnx.data';
  try {
    opts.check?.(spec);
    const folder = {
      format: 'llmopt-artifact' as const,
      source,
      passes: [...(opts.passes ?? []), passRecord('export', { attention: opts.attention, layout: opts.layout, opset })],
      model: {
        file: jsLayout ? 'onnx/model.onnx' : 'model.onnx',
        dataFile: jsLayout ? 'onnx/model.onnx_data' : 'model.onnx.data',
        attention: opts.attention,
        precision: opts.precision ?? 'float32',
        opset,
      },
    };
    return await writeModelFolder(output, folder, async (tmp) => {
      const onnxDir = jsLayout ? join(tmp, 'onnx') : tmp;
      mkdirSync(onnxDir, { recursive: true });
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
      if (jsLayout) config['transformers.js_config'] = { use_external_data_format: true, dtype: 'fp32' };
      writeFileSync(join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
      return { spec, parameters: parameterCount(spec), modelBytes: bytes.byteLength, dataBytes: statSync(join(onnxDir, dataName)).size };
    });
  } finally {
    await model.close();
  }
}
