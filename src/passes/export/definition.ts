// export's declaration: Hugging Face folder (float, or compressed-tensors) -> a float32 ONNX artifact.
import { ATTENTION_FORMS } from '../../core/io.js';
import { exportModel, LAYOUTS } from '../export.js';
import { choice, OptionError, outputFolder, printOptions, repeatable, type OptionValues } from '../options.js';
import { TJS_DTYPES, type TjsDtype } from './dtypes.js';
import { definePass } from '../pass.js';

const options = {
  ...outputFolder('artifact folder to write (written atomically)'),
  attention: choice(ATTENTION_FORMS, {
    arg: '<form>',
    default: 'fused',
    help:
      'fused: com.microsoft GroupQueryAttention (onnxruntime CPU/WebGPU/CUDA, onnxruntime-genai I/O); ' +
      "standard: ai.onnx ops only; inplace: the cache stays in llmopt's runtime, fastest batched decoding on CPU (llmopt only)",
  }),
  layout: choice(LAYOUTS, {
    arg: '<layout>',
    default: 'llmopt',
    help: `folder layout: ${LAYOUTS.join(' | ')} (onnx/model.onnx + model.onnx_data, as transformers.js loads it)`,
  }),
  dtype: repeatable({
    arg: '<dtype>',
    help: `--layout transformers.js: also write the variant transformers.js loads for this dtype (${TJS_DTYPES.join(' | ')}; repeatable)`,
  }),
  ...printOptions('no progress bar'),
};
export type ExportCliOptions = OptionValues<typeof options>;

export const exportPass = definePass({
  name: 'export',
  options,
  reads: { input: ['hf', 'hf-quantized'] },
  writes: () => ({ kind: 'artifact', precision: 'float32' }),
  figures: () => [],
  validate: (o) => {
    for (const d of o.dtype) {
      if (!(TJS_DTYPES as readonly string[]).includes(d))
        throw new OptionError('dtype', (n) => `${n('dtype')} ${d}: expected one of ${TJS_DTYPES.join(', ')}`);
      if (o.layout !== 'transformers.js')
        throw new OptionError('dtype', (n) => `${n('dtype')} ${d}: dtype variants are written in ${n('layout')} transformers.js only`);
    }
    if (o.attention === 'inplace' && o.layout === 'transformers.js') {
      throw new OptionError(
        'attention',
        (n) => `${n('attention')} inplace: its cache inputs are llmopt's own; transformers.js runs ${n('attention')} fused or standard`,
      );
    }
  },
  run: (o, ctx) =>
    exportModel(ctx.reads.input!, ctx.output, {
      attention: o.attention,
      layout: o.layout,
      dtypes: o.dtype as TjsDtype[],
      onProgress: ctx.onProgress,
    }),
  measured: () => ({}),
});
