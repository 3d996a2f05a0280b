// Opens a Hugging Face model folder as a spec plus a validated weight source: every tensor the
// spec needs is present with the shape and dtype config.json implies, before any work starts.
import { InputError } from '../errors.js';
import { Checkpoint } from '../formats/safetensors.js';
import { readModelSpec } from '../formats/hf-config.js';
import type { DType } from '../formats/dtype.js';
import { expectedTensors, type DecoderSpec, type WeightDtype } from './spec.js';
import type { WeightSource } from './weights.js';

const DTYPE_OF: Record<WeightDtype, DType> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

export interface HfModel {
  dir: string;
  spec: DecoderSpec;
  checkpoint: Checkpoint;
  weights: WeightSource;
}

/** Checks names, shapes and dtypes of the checkpoint against the spec. */
export function validateCheckpoint(spec: DecoderSpec, ckpt: Checkpoint): void {
  const want = DTYPE_OF[spec.weightDtype];
  for (const [name, shape] of expectedTensors(spec)) {
    if (!ckpt.has(name)) throw new InputError(`${ckpt.dir}: tensor "${name}" is missing (config.json implies it)`);
    const info = ckpt.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new InputError(`${info.file}: tensor "${name}" has shape [${info.shape}], config.json implies [${shape}]`);
    }
    if (info.dtype !== want) {
      throw new InputError(`${info.file}: tensor "${name}" is ${info.dtype}, config.json says torch_dtype ${spec.weightDtype} (${want})`);
    }
  }
}

/** Opens and validates a Hugging Face Llama folder. The caller closes `checkpoint`. */
export async function openHfModel(dir: string): Promise<HfModel> {
  const spec = readModelSpec(dir);
  const checkpoint = await Checkpoint.open(dir);
  try {
    validateCheckpoint(spec, checkpoint);
  } catch (e) {
    await checkpoint.close();
    throw e;
  }
  const weights: WeightSource = {
    has: (name) => checkpoint.has(name),
    shape: (name) => checkpoint.info(name).shape,
    readFloat32: (name) => checkpoint.readFloat32(name),
  };
  return { dir, spec, checkpoint, weights };
}
