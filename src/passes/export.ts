// export: Hugging Face checkpoint -> ONNX artifact folder (decoder with KV cache, external weights),
// written by model/artifact-writer.ts (streamed one tensor at a time, atomically).
import { InputError } from '../core/errors.js';
import { writeOnnxArtifact, type ArtifactHooks } from '../model/artifact-writer.js';
import { ATTENTION, ATTENTION_FORMS, type AttentionForm } from '../core/io.js';
import type { DecoderSpec } from '../core/spec.js';
import type { Device } from '../runtime/device.js';
import { dtypeEmitters, TJS_SUFFIX, type TjsDtype } from './export/dtypes.js';

export const LAYOUTS = ['llmopt', 'transformers.js'] as const;
export type Layout = (typeof LAYOUTS)[number];

/**
 * The attention form written when the user names none: on the CPU, inplace (the cache stays where it lies, logits
 * only where asked: the fastest decode at batch 1 and batched, npm run bench:peers); transformers.js loads only
 * past/present graphs and the GPU providers run GroupQueryAttention on their own buffers, so those get fused.
 */
export function defaultAttention(device: Device, layout: Layout): AttentionForm {
  return device === 'cpu' && layout === 'llmopt' ? 'inplace' : 'fused';
}

/** The export's own options; how weights are emitted (quantization's hooks) and progress: ArtifactHooks. */
export interface ExportOptions extends ArtifactHooks {
  attention: AttentionForm;
  /** llmopt: model.onnx + model.onnx.data at the top; transformers.js: onnx/model.onnx + onnx/model.onnx_data. */
  layout: Layout;
  /** transformers.js layout: the dtypes to write (onnx/model<suffix>.onnx each); fp32 is always written. */
  dtypes?: TjsDtype[];
  opset?: number;
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

export async function exportModel(source: string, output: string, opts: ExportOptions): Promise<ExportReport> {
  const started = Date.now();
  const check = (_spec: DecoderSpec) => {
    if (opts.layout === 'transformers.js' && !ATTENTION[opts.attention].transformersJs) {
      const hint = `transformers.js runs --attention ${ATTENTION_FORMS.filter((f) => ATTENTION[f].transformersJs).join(' or ')}`;
      throw new InputError(`--attention ${opts.attention}: its cache inputs are llmopt's own; ${hint}`);
    }
  };
  if (opts.dtypes?.length && opts.layout !== 'transformers.js')
    throw new InputError(`--dtype ${opts.dtypes.join(', ')}: dtype variants are for --layout transformers.js`);
  const variants = [...new Set(opts.dtypes ?? [])]
    .filter((d) => d !== 'fp32')
    .map((dtype) => ({ dtype, name: `model${TJS_SUFFIX[dtype]}`, ...dtypeEmitters(dtype) }));
  const written = await writeOnnxArtifact(source, output, { ...opts, check, variants });
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
