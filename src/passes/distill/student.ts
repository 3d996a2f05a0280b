// The student of a distillation: its spec and starting weights, from a checkpoint of the teacher's
// architecture (a pruned one, say) or from a subset of the teacher's layers; and saving it back as a
// Hugging Face folder with the tensor layout it came in.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../core/errors.js';
import { fromFloat32, type DType } from '../../formats/dtype.js';
import { writeSafetensors, type TensorEntry } from '../../formats/safetensors.js';
import { openHfModel } from '../../model/checkpoint.js';
import { textModelConfig } from '../../model/architectures/index.js';
import { expectedTensors, type DecoderSpec } from '../../core/spec.js';
import { checkpointTensors, fuseParts, fusedLayout, fusedNameOfPart } from '../../core/fused.js';

export interface Student {
  spec: DecoderSpec;
  /** Every tensor of the student, float32, Hugging Face names and layout. */
  weights: Map<string, Float32Array>;
  /** dtype each tensor is saved in (the input's). */
  dtypes: Map<string, DType>;
  /** config.json the saved folder gets. */
  config: Record<string, unknown>;
  /** Folder whose tokenizer and generation config are copied. */
  filesFrom: string;
  /** Teacher layer each student layer started from (shallow students). */
  layerIds: number[] | null;
}

const DTYPE_OF = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' } as const;

async function readAll(dir: string): Promise<{ spec: DecoderSpec; weights: Map<string, Float32Array>; dtypes: Map<string, DType> }> {
  const model = await openHfModel(dir);
  try {
    const weights = new Map<string, Float32Array>();
    const dtypes = new Map<string, DType>();
    // A fused part (Phi-3's q_proj in qkv_proj) has the dtype of the tensor it is stored in.
    const stored = fusedNameOfPart(model.spec);
    for (const name of expectedTensors(model.spec).keys()) {
      weights.set(name, await model.weights.readFloat32(name));
      dtypes.set(name, model.checkpoint ? model.checkpoint.info(stored.get(name) ?? name).dtype : DTYPE_OF[model.spec.weightDtype]);
    }
    return { spec: model.spec, weights, dtypes };
  } finally {
    await model.close();
  }
}

/** A checkpoint of the teacher's architecture family as the student. */
export async function loadStudent(dir: string, teacher: DecoderSpec): Promise<Student> {
  const { spec, weights, dtypes } = await readAll(dir);
  if (spec.vocabSize !== teacher.vocabSize)
    throw new InputError(
      `${dir}: student vocabulary ${spec.vocabSize} differs from the teacher's ${teacher.vocabSize}; the logit loss needs them equal`,
    );
  // The student is saved with the text model's names: a wrapping checkpoint's config becomes its text model's.
  const config = textModelConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), join(dir, 'config.json'));
  // A quantized student is trained (and saved) in float.
  delete config.quantization_config;
  return { spec, weights, dtypes, config, filesFrom: dir, layerIds: null };
}

/** Evenly spaced layer ids: the first and the last teacher layer, and spread between. */
export function evenlySpacedLayers(teacherLayers: number, studentLayers: number): number[] {
  if (studentLayers === 1) return [teacherLayers - 1];
  return Array.from({ length: studentLayers }, (_, i) => Math.round((i * (teacherLayers - 1)) / (studentLayers - 1)));
}

/** A shallower student initialised from the teacher's layers `layerIds` (and its embeddings, norm, head). */
export async function shallowStudent(teacherDir: string, layerIds: number[]): Promise<Student> {
  const t = await readAll(teacherDir);
  const L = t.spec.numLayers;
  if (layerIds.length === 0 || layerIds.length > L)
    throw new InputError(`--student-layers ${layerIds.length}: choose 1 to ${L} (the teacher has ${L} layers)`);
  for (const id of layerIds)
    if (!Number.isInteger(id) || id < 0 || id >= L)
      throw new InputError(`--student-layer-ids: layer ${id} does not exist (the teacher has layers 0 to ${L - 1})`);
  if (new Set(layerIds).size !== layerIds.length)
    throw new InputError(`--student-layer-ids ${layerIds.join(',')}: a layer is listed twice`);
  // Per-layer fields follow their layers: a student of gemma3-tiny's layers 0 and 5 has a sliding and a global layer.
  const pick = <T>(perLayer: readonly T[]) => layerIds.map((i) => perLayer[i]!);
  const spec: DecoderSpec = {
    ...t.spec,
    numLayers: layerIds.length,
    ropeLayers: t.spec.ropeLayers && pick(t.spec.ropeLayers),
    ...(t.spec.slidingLayers ? { slidingLayers: pick(t.spec.slidingLayers) } : {}),
  };
  const weights = new Map<string, Float32Array>();
  const dtypes = new Map<string, DType>();
  for (const name of expectedTensors(spec).keys()) {
    const m = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
    const from = m ? `model.layers.${layerIds[Number(m[1])]}.${m[2]}` : name;
    weights.set(name, t.weights.get(from)!.slice());
    dtypes.set(name, t.dtypes.get(from)!);
  }
  // Saved under the text model's names, a student of a wrapping teacher (Gemma 3 multimodal) is a text-only model.
  const configPath = join(teacherDir, 'config.json');
  const config = textModelConfig(JSON.parse(readFileSync(configPath, 'utf8')), configPath);
  config.num_hidden_layers = layerIds.length;
  // config.json's per-layer lists likewise (Gemma's layer_types, SmolLM3's no_rope_layers and layer_types), or the
  // student would not load; a Gemma pattern left implicit (sliding_window_pattern, Gemma 2's even layers) would not
  // hold for the chosen layers, so it is written out as layer_types.
  for (const key of ['layer_types', 'no_rope_layers']) if (Array.isArray(config[key])) config[key] = pick(config[key]);
  if (spec.slidingLayers && !Array.isArray(config.layer_types))
    config.layer_types = spec.slidingLayers.map((s) => (s ? 'sliding_attention' : 'full_attention'));
  return { spec, weights, dtypes, config, filesFrom: teacherDir, layerIds };
}

/**
 * Writes the student's weights and config.json into `dir` (which exists; tokenizer files: copyModelFiles), in the
 * architecture's own layout: fused tensors (Phi-3) stacked from their parts again, in their first part's dtype.
 */
export async function saveStudent(dir: string, student: Student, extraConfig: Record<string, unknown> = {}): Promise<void> {
  const fused = fusedLayout(student.spec);
  const dtypeOf = (name: string) => student.dtypes.get(fused.get(name)?.parts[0]?.name ?? name)!;
  const entries: TensorEntry[] = [...checkpointTensors(student.spec)].map(([name, shape]) => ({ name, dtype: dtypeOf(name), shape }));
  const weightOf = async (name: string) => {
    const f = fused.get(name);
    return f ? fuseParts(f, async (part) => student.weights.get(part)!) : student.weights.get(name)!;
  };
  await writeSafetensors(
    join(dir, 'model.safetensors'),
    entries,
    async (name) => fromFloat32(await weightOf(name), dtypeOf(name) as 'F32' | 'F16' | 'BF16'),
    { format: 'pt' },
  );
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify({ ...student.config, ...extraConfig }, null, 2)}\n`);
}
