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
import { buildDecoderGraph, weightTensorCount } from './decoder.js';
import type { EmbeddingEmitter } from './embedding.js';
import type { AttentionForm } from '../core/io.js';
import { parameterCount, type DecoderSpec } from '../core/spec.js';
import type { LinearEmitter } from './linear.js';
import { overlayWeights } from '../core/weights.js';

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
  /** Float tensors read in place of the source's (AWQ's folded norms and biases), by tensor name. */
  overrides?: ReadonlyMap<string, Float32Array>;
}

/** One more graph of the same model in the transformers.js layout: onnx/<name>.onnx + onnx/<name>.onnx_data. */
export interface ArtifactVariant {
  /** transformers.js's dtype it is selected by (`fp16`, `q4` ...). */
  dtype: string;
  /** File name without `.onnx`, e.g. `model_q4`. */
  name: string;
  linear?: LinearEmitter;
  embedding?: EmbeddingEmitter;
}

export interface ArtifactOptions extends ArtifactHooks {
  attention: AttentionForm;
  layout: ArtifactLayout;
  /** transformers.js layout only: further dtype variants beside onnx/model.onnx (fp32). */
  variants?: ArtifactVariant[];
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
  const variants = jsLayout ? (opts.variants ?? []) : [];
  try {
    opts.check?.(spec);
    const folder = {
      format: 'llmopt-artifact' as const,
      source,
      passes: [
        ...(opts.passes ?? []),
        passRecord('export', {
          attention: opts.attention,
          layout: opts.layout,
          opset,
          ...(variants.length > 0 ? { dtypes: ['fp32', ...variants.map((v) => v.dtype)] } : {}),
        }),
      ],
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
      const total = weightTensorCount(spec) * (1 + variants.length);
      let done = 0;
      const graph = async (name: string, data: string, hooks: { linear?: LinearEmitter; embedding?: EmbeddingEmitter }) => {
        const writer = new ExternalDataWriter(join(onnxDir, data), data);
        const g = new GraphBuilder(writer);
        try {
          await buildDecoderGraph(g, spec, opts.overrides ? overlayWeights(model.weights, opts.overrides) : model.weights, {
            attention: opts.attention,
            // llmopt's runtime trims sliding layers' caches to their window; transformers.js feeds whole caches.
            windowedCache: !jsLayout,
            linear: hooks.linear,
            embedding: hooks.embedding,
            onTensor: () => opts.onProgress?.(++done, total),
          });
        } finally {
          writer.close();
        }
        const bytes = encodeModel(g, 'llmopt_decoder', { opset, producerVersion: TOOL_VERSION });
        // A graph that fails our structural check is a builder bug: never hand it to a user.
        assertGraphValid(bytes);
        writeFileSync(join(onnxDir, `${name}.onnx`), bytes);
        return bytes;
      };
      const bytes = await graph('model', dataName, opts);
      for (const v of variants) await graph(v.name, `${v.name}.onnx_data`, v);

      const config = JSON.parse(readFileSync(join(source, 'config.json'), 'utf8'));
      if (jsLayout && variants.length === 0) config['transformers.js_config'] = { use_external_data_format: true, dtype: 'fp32' };
      else if (jsLayout) {
        // One external data chunk per graph; every variant keeps float32 inputs, outputs and cache.
        const files = ['model', ...variants.map((v) => v.name)];
        const dtypes = ['fp32', ...variants.map((v) => v.dtype)];
        config['transformers.js_config'] = {
          dtype: 'fp32',
          use_external_data_format: Object.fromEntries(files.map((f) => [`${f}.onnx`, 1])),
          kv_cache_dtype: Object.fromEntries(dtypes.map((d) => [d, 'float32'])),
        };
      }
      writeFileSync(join(tmp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
      return { spec, parameters: parameterCount(spec), modelBytes: bytes.byteLength, dataBytes: statSync(join(onnxDir, dataName)).size };
    });
  } finally {
    await model.close();
  }
}
