// Opens a Hugging Face model folder as a spec plus a validated weight source: every tensor the
// spec needs is present with the shape and dtype config.json implies, before any work starts.
// Quantized checkpoints (compressed-tensors, GPTQ, AWQ: llmopt's own quantize outputs among them) read as dequantized floats.
import { join } from 'node:path';
import { InputError } from '../core/errors.js';
import { Checkpoint } from '../formats/safetensors.js';
import { readJsonFile } from '../formats/hf-config.js';
import { readModelSpec, tensorPrefixesOf } from './architectures/index.js';
import { checkpointTensorName } from './architectures/architecture.js';
import { isCompressedTensors } from '../formats/compressed-tensors.js';
import { openCompressedTensors } from '../formats/compressed-tensors-read.js';
import { isGptq, openGptq } from '../formats/gptq-checkpoint.js';
import { isAwq, openAwq } from '../formats/awq-checkpoint.js';
import type { QuantizedCheckpointSource } from '../formats/quantized-source.js';
import type { DType } from '../formats/dtype.js';
import type { DecoderSpec, WeightDtype } from '../core/spec.js';
import type { WeightSource } from '../core/weights.js';
import { checkpointTensors, fusedLayout, splitFusedWeights } from '../core/fused.js';
import { ggufWeights, readGgufModel } from './gguf-model.js';
import { ggufSourceOf } from '../formats/gguf/companion.js';

const DTYPE_OF: Record<WeightDtype, DType> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

export interface HfModel {
  dir: string;
  spec: DecoderSpec;
  weights: WeightSource;
  /** The safetensors files, for passes that copy tensors byte for byte (null for quantized checkpoints). */
  checkpoint: Checkpoint | null;
  /** quantization_config.quant_method when the checkpoint is already quantized ("gguf Q4_0/Q6_K" for a quantized GGUF file). */
  quantization: string | null;
  /** The GGUF file the weights are read from (dequantized), or null for a Hugging Face folder. */
  gguf: string | null;
  /** Bytes of each stored tensor, under its Hugging Face name (a fused GGUF tensor under its first part's). */
  storedBytes(): Array<[string, number]>;
  close(): Promise<void>;
}

/** What a wrongly shaped tensor should have been; a fused one says how config.json splits its rows. */
function impliedShape(spec: DecoderSpec, name: string, shape: number[]): string {
  const fused = fusedLayout(spec).get(name);
  if (!fused) return `[${shape}]`;
  const parts = fused.parts.map((p) => `${p.name.split('.').at(-2)} ${p.rows}`).join(' + ');
  return `[${shape}] (its rows split as ${parts})`;
}

/** Checks names, shapes and dtypes of the checkpoint (in the architecture's own layout, fused tensors included) against the spec. */
export function validateCheckpoint(spec: DecoderSpec, ckpt: Checkpoint): void {
  const want = DTYPE_OF[spec.weightDtype];
  for (const [name, shape] of checkpointTensors(spec)) {
    if (!ckpt.has(name)) throw new InputError(`${ckpt.dir}: tensor "${name}" is missing (config.json implies it)`);
    const info = ckpt.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new InputError(
        `${info.file}: tensor "${name}" has shape [${info.shape}], config.json implies ${impliedShape(spec, name, shape)}`,
      );
    }
    if (info.dtype !== want) {
      throw new InputError(`${info.file}: tensor "${name}" is ${info.dtype}, config.json says torch_dtype ${spec.weightDtype} (${want})`);
    }
  }
}

/**
 * The packed int checkpoint `config` (the folder's parsed config.json) declares, opened as floats with its codes, and
 * its format's name; null when it declares no quantization_config. An unsupported quant_method is refused.
 */
export async function openQuantizedCheckpoint(
  dir: string,
  config: Record<string, unknown>,
): Promise<{ format: string; source: QuantizedCheckpointSource } | null> {
  const qc = config.quantization_config as Record<string, unknown> | undefined;
  if (!qc || typeof qc !== 'object') return null;
  const formats: Array<[string, (c: Record<string, unknown>) => boolean, (d: string) => Promise<QuantizedCheckpointSource>]> = [
    ['compressed-tensors', isCompressedTensors, openCompressedTensors],
    ['gptq', isGptq, openGptq],
    ['awq', isAwq, openAwq],
  ];
  const format = formats.find(([, is]) => is(config));
  if (!format) {
    throw new InputError(
      `${join(dir, 'config.json')}: quantization_config quant_method "${String(qc.quant_method)}" ` +
        `is not supported (supported: ${formats.map(([name]) => name).join(', ')})`,
    );
  }
  return { format: format[0], source: await format[2](dir) };
}

/** Opens and validates a Hugging Face Llama folder. The caller calls `close()`. */
export async function openHfModel(dir: string): Promise<HfModel> {
  // A GGUF file's companion folder (model/gguf-model.ts): the weights are the file's, dequantized.
  const gguf = ggufSourceOf(dir);
  if (gguf !== null) {
    const model = await readGgufModel(gguf);
    const quantization = model.quantizedTypes.length > 0 ? `gguf ${model.quantizedTypes.join('/')}` : null;
    const bytes = new Map(model.file.tensors.map((t) => [t.name, t.bytes]));
    const storedBytes = () => model.plan.map((e): [string, number] => [e.hf[0]!, bytes.get(e.gguf)!]);
    const weights = ggufWeights(model);
    return { dir, spec: model.spec, weights, checkpoint: null, quantization, gguf, storedBytes, close: async () => {} };
  }
  const spec = readModelSpec(dir);
  const config = readJsonFile(join(dir, 'config.json'));
  const packed = await openQuantizedCheckpoint(dir, config);
  if (packed) {
    const { format, source } = packed;
    for (const [name, shape] of checkpointTensors(spec)) {
      if (!source.has(name)) {
        await source.close();
        throw new InputError(`${dir}: tensor "${name}" is missing (config.json implies it)`);
      }
      const got = source.shape(name);
      if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
        await source.close();
        throw new InputError(`${dir}: tensor "${name}" has shape [${got}], config.json implies ${impliedShape(spec, name, shape)}`);
      }
    }
    const weights = splitFusedWeights(spec, source);
    const storedBytes = () => [...checkpointTensors(spec).keys()].map((n): [string, number] => [n, 0]);
    return {
      dir,
      spec,
      weights,
      checkpoint: null,
      quantization: format,
      gguf: null,
      storedBytes,
      close: () => source.close(),
    };
  }
  // A checkpoint that wraps the text model (Gemma 3 multimodal) is read under the text model's names.
  const prefixes = tensorPrefixesOf(config, join(dir, 'config.json'));
  const opened = await Checkpoint.open(dir);
  const checkpoint = prefixes.length > 0 ? opened.renamed((name) => checkpointTensorName(name, prefixes)) : opened;
  try {
    validateCheckpoint(spec, checkpoint);
  } catch (e) {
    await checkpoint.close();
    throw e;
  }
  // Fused tensors (Phi-3) are served as their parts: every consumer reads q_proj, k_proj, ... by name.
  const weights: WeightSource = splitFusedWeights(spec, {
    has: (name) => checkpoint.has(name),
    shape: (name) => checkpoint.info(name).shape,
    readFloat32: (name) => checkpoint.readFloat32(name),
  });
  const storedBytes = () => checkpoint.names().map((n): [string, number] => [n, checkpoint.info(n).byteLength]);
  return { dir, spec, weights, checkpoint, quantization: null, gguf: null, storedBytes, close: () => checkpoint.close() };
}
