// export's declaration: Hugging Face folder (float, or compressed-tensors) -> a float32 ONNX artifact (with the
// transformers.js layout, the dtype variants transformers.js selects beside it), or one llama.cpp GGUF file
// (F32/F16/BF16, as llama.cpp's converter writes it).
import { ATTENTION_FORMS } from '../../core/io.js';
import { DEVICES } from '../../runtime/device.js';
import { defaultAttention, exportModel, LAYOUTS, type ExportReport } from '../export.js';
import { choice, OptionError, outputFolder, printOptions, repeatable, type OptionValues } from '../options.js';
import { definePass } from '../pass.js';
import { TJS_DTYPES, type TjsDtype } from './dtypes.js';
import { exportGguf, GGUF_DTYPES, type GgufDtype, type GgufExportReport } from './gguf.js';

export const EXPORT_FORMATS = ['onnx', 'gguf'] as const;

const options = {
  ...outputFolder('artifact folder to write, or the .gguf file with --format gguf (written atomically)'),
  format: choice(EXPORT_FORMATS, {
    arg: '<format>',
    default: 'onnx',
    help: 'onnx: an artifact folder llmopt and onnxruntime run; gguf: one file llama.cpp (Ollama, LM Studio) loads',
  }),
  // One flag for the two meanings a user means by it: the GGUF file's float type, or transformers.js' dtype variants.
  dtype: repeatable({
    arg: '<dtype>',
    help:
      `--format gguf: matrices in ${GGUF_DTYPES.join(' | ')} (default f32; norms and vectors stay f32, as llama.cpp's converter ` +
      `writes them); --layout transformers.js: also write the variant transformers.js loads for ${TJS_DTYPES.join(' | ')} (repeatable)`,
  }),
  // No fixed default: the device the artifact is for picks it (defaultAttention).
  attention: choice(ATTENTION_FORMS, {
    arg: '<form>',
    help:
      'fused: com.microsoft GroupQueryAttention (onnxruntime CPU/WebGPU/CUDA, onnxruntime-genai I/O); ' +
      "standard: ai.onnx ops only; inplace: the cache stays in llmopt's runtime, fastest on CPU (llmopt only). " +
      'Default: inplace for --device cpu, fused for webgpu, cuda and --layout transformers.js',
  }),
  device: choice(DEVICES, {
    arg: '<device>',
    default: 'cpu',
    only: 'cli',
    help: `the device the artifact is for (${DEVICES.join(' | ')}): picks the fastest attention form unless --attention is given`,
  }),
  layout: choice(LAYOUTS, {
    arg: '<layout>',
    default: 'llmopt',
    help: `folder layout: ${LAYOUTS.join(' | ')} (onnx/model.onnx + model.onnx_data, as transformers.js loads it)`,
  }),
  ...printOptions('no progress bar'),
};
export type ExportCliOptions = OptionValues<typeof options>;
/** What export reports: an ONNX artifact's figures or a GGUF file's. */
export type ExportPassReport = (ExportReport & { format: 'onnx' }) | GgufExportReport;

/** The GGUF float type asked for (f32 when none). */
const ggufDtype = (o: { dtype: string[] }): GgufDtype => (o.dtype[0] ?? 'f32') as GgufDtype;

export const exportPass = definePass({
  name: 'export',
  options,
  reads: { input: ['hf', 'hf-quantized'] },
  writes: (o) => (o.format === 'gguf' ? { kind: 'gguf' } : { kind: 'artifact', precision: 'float32' }),
  figures: () => [],
  validate: (o, given) => {
    if (o.format === 'gguf') {
      // ONNX-only options asked of a GGUF file are mistakes, not no-ops.
      for (const key of ['attention', 'layout', 'device'] as const) {
        if (given.has(key)) throw new OptionError(key, (n) => `${n(key)}: an ONNX option; ${n('format')} gguf writes one llama.cpp file`);
      }
      if (o.dtype.length > 1)
        throw new OptionError('dtype', (n) => `${n('dtype')}: a GGUF file has one float type, given ${o.dtype.join(', ')}`);
      const d = ggufDtype(o);
      if (!(GGUF_DTYPES as readonly string[]).includes(d))
        throw new OptionError('dtype', (n) => `${n('dtype')} ${d}: ${n('format')} gguf writes ${GGUF_DTYPES.join(', ')}`);
      return;
    }
    for (const d of o.dtype) {
      if ((GGUF_DTYPES as readonly string[]).includes(d))
        throw new OptionError('dtype', (n) => `${n('dtype')} ${d}: a GGUF option (add ${n('format')} gguf); the ONNX artifact is float32`);
      if (o.layout !== 'transformers.js')
        throw new OptionError('dtype', (n) => `${n('dtype')} ${d}: dtype variants are written in ${n('layout')} transformers.js only`);
      if (!(TJS_DTYPES as readonly string[]).includes(d))
        throw new OptionError('dtype', (n) => `${n('dtype')} ${d}: expected one of ${TJS_DTYPES.join(', ')}`);
    }
    if (o.attention === 'inplace' && o.layout === 'transformers.js') {
      throw new OptionError(
        'attention',
        (n) => `${n('attention')} inplace: its cache inputs are llmopt's own; transformers.js runs ${n('attention')} fused or standard`,
      );
    }
  },
  run: async (o, ctx): Promise<ExportPassReport> => {
    if (o.format === 'gguf') return exportGguf(ctx.reads.input!, ctx.output, { dtype: ggufDtype(o), onProgress: ctx.onProgress });
    const report = await exportModel(ctx.reads.input!, ctx.output, {
      attention: o.attention ?? defaultAttention(ctx.device, o.layout),
      layout: o.layout,
      dtypes: o.dtype as TjsDtype[],
      onProgress: ctx.onProgress,
    });
    return { format: 'onnx', ...report };
  },
  measured: () => ({}),
});
