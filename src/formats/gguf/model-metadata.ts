// A model's GGUF metadata before its tokenizer: general.* (architecture, name, size label, file type, quantization
// version) and the architecture's hyperparameters, in llama.cpp's converter's order, from the architecture table.
import type { DecoderSpec } from '../../core/spec.js';
import { phi3AttnFactor, type GgufArchitecture, type GgufWriteContext } from './architectures.js';
import type { GgufValue } from './file.js';

/** ggml's quantization version llama.cpp's converter and quantizer write (GGML_QNT_VERSION). */
export const GGML_QUANTIZATION_VERSION = 2;

/** llama.cpp's file types (llama_ftype), the `general.file_type` of a file mostly of one type or mix. */
export const LLAMA_FILE_TYPES = {
  f32: 0,
  f16: 1,
  q4_0: 2,
  q4_1: 3,
  q8_0: 7,
  q5_0: 8,
  q4_k_s: 14,
  q4_k_m: 15,
  q5_k_s: 16,
  q5_k_m: 17,
  q6_k: 18,
  bf16: 32,
} as const;

/** gguf-py's size label: parameters in K/M/B/T with at least two significant digits ("186K", "1.2B"). */
export function sizeLabel(parameters: number): string {
  const [scale, suffix] = parameters > 1e12 ? [1e-12, 'T'] : parameters > 1e9 ? [1e-9, 'B'] : parameters > 1e6 ? [1e-6, 'M'] : [1e-3, 'K'];
  const scaled = parameters * scale;
  const digits = String(Math.round(scaled)).replace(/^0+/, '').length;
  return `${scaled.toFixed(Math.max(2 - digits, 0))}${suffix}`;
}

/** gguf-py's model name from a folder name: words split on - and _, each capitalized ("qwen2-tiny" -> "Qwen2 Tiny"). */
export function modelNameOf(folder: string): string {
  return folder
    .split(/[-_]+/)
    .filter(Boolean)
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join(' ');
}

export interface GeneralInfo {
  name: string;
  parameters: number;
}

/** general.* and the hyperparameters; the tokenizer's entries follow. */
export function ggufModelMetadata(
  spec: DecoderSpec,
  arch: GgufArchitecture,
  ctx: GgufWriteContext,
  general: GeneralInfo,
): Array<[string, GgufValue]> {
  const out: Array<[string, GgufValue]> = [['general.architecture', { type: 'string', value: arch.gguf }]];
  // The converter adds Phi-3's longrope scale while it writes the factor tensors, before the other keys.
  const attnFactor = arch.gguf === 'phi3' ? phi3AttnFactor(spec) : undefined;
  if (attnFactor !== undefined) out.push([`${arch.gguf}.rope.scaling.attn_factor`, { type: 'f32', value: attnFactor }]);
  out.push(['general.type', { type: 'string', value: 'model' }]);
  out.push(['general.name', { type: 'string', value: general.name }]);
  out.push(['general.size_label', { type: 'string', value: sizeLabel(general.parameters) }]);
  for (const field of arch.metadata) {
    const value = field.write(spec, ctx);
    if (value === undefined) continue;
    const key = field.key.startsWith('general.') ? field.key : `${arch.gguf}.${field.key}`;
    out.push([key, { type: field.type, value } as GgufValue]);
  }
  out.push(['general.quantization_version', { type: 'u32', value: GGML_QUANTIZATION_VERSION }]);
  return out;
}
