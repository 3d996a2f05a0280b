// Hugging Face model -> one GGUF file for llama.cpp: the architecture table's names and layouts, the tokenizer as
// llama.cpp reads it, and each tensor read, converted (or quantized by the caller's encoder) and written in turn,
// so that only one tensor is in memory at a time. export (F32/F16/BF16) and quantize (ggml block types) share it.
import { basename, join, resolve } from 'node:path';
import { InputError } from '../../core/errors.js';
import { expectedTensors, type DecoderSpec } from '../../core/spec.js';
import { fromFloat32 } from '../../formats/dtype.js';
import { readJsonFile } from '../../formats/hf-config.js';
import {
  ggufArchitectureOf,
  ggufTensorPlan,
  llama3RopeFactors,
  toGgufLayout,
  type GgufArchitecture,
  type GgufTensorEntry,
} from '../../formats/gguf/architectures.js';
import { writeGguf, type GgufTensorToWrite, type GgufValue } from '../../formats/gguf/file.js';
import { GGML_TYPES, type GgmlType, rowFits } from '../../formats/gguf/ggml-types.js';
import { ggufModelMetadata, modelNameOf } from '../../formats/gguf/model-metadata.js';
import { ggufTokenizer } from '../../formats/gguf/tokenizer.js';
import { openHfModel } from '../../model/checkpoint.js';
import type { WeightSource } from '../../core/weights.js';

/** One GGUF tensor as the type chooser sees it. */
export interface GgufTensorSlot {
  /** GGUF name (blk.3.ffn_down.weight). */
  name: string;
  /** Hugging Face tensors it holds (several for Phi-3's fused ones; none for rope factor tensors). */
  hf: string[];
  /** Outermost first: [rows, cols] for a matrix. */
  shape: number[];
  layer: number | null;
  /** The architecture table's entry (absent for rope factor tensors). */
  entry?: GgufTensorEntry;
}

export interface GgufWriterOptions {
  /** general.file_type (llama_ftype). */
  fileType: number;
  /** The ggml type each tensor is stored in. */
  typeOf: (slot: GgufTensorSlot, spec: DecoderSpec, arch: GgufArchitecture) => GgmlType;
  /** Bytes of a tensor in a block type (F32/F16/BF16 are converted here); the tensor's float values in GGUF layout. */
  encode?: (slot: GgufTensorSlot, data: Float32Array, type: GgmlType) => Uint8Array | Promise<Uint8Array>;
  /**
   * After every tensor's type is chosen and before anything is written: work on the opened model the encoder then
   * uses (GPTQ's calibration), given each slot's type.
   */
  prepare?: (spec: DecoderSpec, weights: WeightSource, slots: ReadonlyArray<GgufTensorSlot & { type: GgmlType }>) => Promise<void>;
  /** Float tensors read in place of the source's, by Hugging Face name (AWQ's scaled weights and folded norms; filled by prepare). */
  overrides?: ReadonlyMap<string, Float32Array>;
  onProgress?: (done: number, total: number) => void;
}

export interface GgufWriteReport {
  output: string;
  architecture: string;
  tokenizer: { model: string; pre: string };
  tensors: number;
  parameters: number;
  /** Tensors per ggml type. */
  types: Partial<Record<GgmlType, number>>;
  bytes: number;
  seconds: number;
}

/** The converter's float rule: 1-D tensors and norms stay F32, matrices take the file's float type. */
export function floatTypeOf(dtype: 'F32' | 'F16' | 'BF16') {
  return (slot: GgufTensorSlot): GgmlType => (slot.shape.length <= 1 || slot.name.endsWith('_norm.weight') ? 'F32' : dtype);
}

const layerOf = (name: string): number | null => {
  const m = /^blk\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : null;
};

/** Rope factor tensors llama.cpp reads beside the weights (Llama 3 rope_freqs, Phi-3 longrope's long and short). */
function ropeTensors(spec: DecoderSpec): Array<{ name: string; data: Float32Array }> {
  const llama3 = llama3RopeFactors(spec);
  if (llama3) return [{ name: 'rope_freqs.weight', data: llama3 }];
  const s = spec.ropeScaling;
  if (s?.type === 'longrope') {
    return [
      { name: 'rope_factors_long.weight', data: Float32Array.from(s.longFactor) },
      { name: 'rope_factors_short.weight', data: Float32Array.from(s.shortFactor) },
    ];
  }
  return [];
}

function encodeFloat(type: GgmlType, data: Float32Array, name: string): Uint8Array {
  if (type === 'F32' || type === 'F16' || type === 'BF16') return fromFloat32(data, type);
  throw new Error(`GGUF writer: tensor "${name}" is ${type} but no quantizer was given`);
}

/**
 * general.name, kept clear of what llama.cpp's vocabulary loader reads into it: a phi3 file named like Phi-3
 * ("phi3", "phi-3", any case) makes it look up Phi-3's <|end|> token, and it fails to load when the vocabulary has none.
 */
function safeModelName(arch: GgufArchitecture, name: string, tokenizer: Array<[string, GgufValue]>): string {
  if (arch.gguf !== 'phi3' || !/phi-?3/i.test(name)) return name;
  const tokens = tokenizer.find(([k]) => k === 'tokenizer.ggml.tokens')?.[1].value as string[] | undefined;
  return tokens?.includes('<|end|>') ? name : name.replace(/phi-?3/gi, 'Phi 3');
}

/** Writes `source` (a Hugging Face folder) as a GGUF file at `output`, atomically. */
export async function writeGgufModel(source: string, output: string, o: GgufWriterOptions): Promise<GgufWriteReport> {
  const started = performance.now();
  const model = await openHfModel(source);
  try {
    if (model.quantization)
      throw new InputError(`${source}: already quantized (${model.quantization}); write the float checkpoint to GGUF`);
    const { spec } = model;
    const arch = ggufArchitectureOf(spec);
    const config = readJsonFile(join(source, 'config.json'));
    const text = typeof config.text_config === 'object' && config.text_config !== null ? (config.text_config as object) : {};
    const configKeys = new Set([...Object.keys(config), ...Object.keys(text)]);
    const tokenizer = ggufTokenizer(source, {
      vocabSize: spec.vocabSize,
      config,
      spacePrefix: arch.spacePrefix,
    });

    const hfShapes = expectedTensors(spec);
    const plan = ggufTensorPlan(spec, arch, hfShapes);
    const covered = new Set(plan.flatMap((e) => e.hf));
    const missed = [...hfShapes.keys()].filter((n) => !covered.has(n));
    if (missed.length > 0) throw new InputError(`GGUF: llama.cpp's ${arch.gguf} has no tensor for ${missed.slice(0, 3).join(', ')}`);
    const rope = ropeTensors(spec);
    const slots: Array<GgufTensorSlot & { rope?: Float32Array }> = [
      ...rope.map((r) => ({ name: r.name, hf: [], shape: [r.data.length], layer: null, rope: r.data })),
      ...plan.map((e) => ({ name: e.gguf, hf: e.hf, shape: e.shape, layer: layerOf(e.gguf), entry: e })),
    ];
    const types = slots.map((s) => o.typeOf(s, spec, arch));
    slots.forEach((s, i) => {
      const cols = s.shape.at(-1)!;
      if (!rowFits(types[i]!, cols)) {
        throw new InputError(
          `GGUF: tensor "${s.name}" rows of ${cols} are not whole ${types[i]} blocks of ${GGML_TYPES[types[i]!].blockSize}`,
        );
      }
    });
    const weights = model.weights;
    await o.prepare?.(
      spec,
      weights,
      slots.map((s, i) => ({ name: s.name, hf: s.hf, shape: s.shape, layer: s.layer, entry: s.entry, type: types[i]! })),
    );
    const name = modelNameOf(basename(resolve(source)));
    const parameters = slots.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
    const metadata = [
      ...ggufModelMetadata(
        spec,
        arch,
        { configKeys, fileType: o.fileType },
        { name: safeModelName(arch, name, tokenizer.entries), parameters },
      ),
      ...tokenizer.entries,
    ];
    const tensors: GgufTensorToWrite[] = slots.map((s, i) => ({
      name: s.name,
      shape: s.shape,
      type: types[i]!,
      data: async () => {
        let values: Float32Array;
        if (s.rope) values = s.rope;
        else {
          const parts: Float32Array[] = [];
          for (const name of s.hf) parts.push(o.overrides?.get(name)?.slice() ?? (await weights.readFloat32(name)));
          values = toGgufLayout(spec, s.entry!, parts);
        }
        const type = types[i]!;
        if (o.encode && type !== 'F32' && type !== 'F16' && type !== 'BF16') return o.encode(s, values, type);
        return encodeFloat(type, values, s.name);
      },
    }));
    const written = await writeGguf(output, metadata, tensors, o.onProgress);
    const counts: Partial<Record<GgmlType, number>> = {};
    for (const t of types) counts[t] = (counts[t] ?? 0) + 1;
    return {
      output,
      architecture: arch.gguf,
      tokenizer: { model: tokenizer.model, pre: tokenizer.pre },
      tensors: slots.length,
      parameters,
      types: counts,
      bytes: written.bytes,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await model.close();
  }
}

export const GGUF_DTYPES = ['f32', 'f16', 'bf16'] as const;
export type GgufDtype = (typeof GGUF_DTYPES)[number];
const FILE_TYPE: Record<GgufDtype, number> = { f32: 0, f16: 1, bf16: 32 };

export type GgufExportReport = GgufWriteReport & { format: 'gguf'; dtype: GgufDtype };

/** export --format gguf: the float file llama.cpp's converter writes (`--outtype f32|f16|bf16`). */
export async function exportGguf(
  source: string,
  output: string,
  o: { dtype: GgufDtype; onProgress?: (done: number, total: number) => void },
): Promise<GgufExportReport> {
  const dtype = o.dtype.toUpperCase() as 'F32' | 'F16' | 'BF16';
  const report = await writeGgufModel(source, output, {
    fileType: FILE_TYPE[o.dtype],
    typeOf: floatTypeOf(dtype),
    onProgress: o.onProgress,
  });
  return { format: 'gguf', dtype: o.dtype, ...report };
}
