// The architectures llmopt builds, and config.json -> DecoderSpec through them: the Llama baseline
// (formats/hf-config.ts) plus what the architecture named by model_type changes. This lives in model/,
// above formats/, because an architecture is a model concern; formats/ keeps only the generic JSON reading.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../core/errors.js';
import type { DecoderSpec } from '../../core/spec.js';
import { ConfigReader, llamaBaseSpec, llamaConfigJson, readJsonFile, type Json } from '../../formats/hf-config.js';
import { tensorNamesIn } from '../../formats/safetensors.js';
import { checkpointTensorName, type Architecture } from './architecture.js';
import { gemma2 } from './gemma2.js';
import { gemma3, gemma3Text } from './gemma3.js';
import { llama } from './llama.js';
import { mistral } from './mistral.js';
import { qwen2 } from './qwen2.js';
import { qwen3 } from './qwen3.js';
import { smollm3 } from './smollm3.js';
import { phi3 } from './phi3.js';

export const ARCHITECTURES: readonly Architecture[] = [llama, mistral, qwen2, qwen3, smollm3, phi3, gemma2, gemma3Text, gemma3];

/** One line: the model types llmopt reads, for refusals. */
export const SUPPORTED_MODELS = ARCHITECTURES.map((a) => a.label ?? a.modelType).join(', ');

/** The architecture config.json names by model_type, its `architectures` entries agreeing. */
export function architectureOf(json: Json, path: string): Architecture {
  const cfg = new ConfigReader(path, json);
  const modelType = cfg.str('model_type');
  const classes = Array.isArray(json.architectures) ? json.architectures.map(String) : [];
  const arch = ARCHITECTURES.find((a) => a.modelType === modelType);
  // Classes the matched architecture does not build; without a match, those no architecture builds.
  const unknown = classes.filter((c) => (arch ? !arch.classes.includes(c) : !ARCHITECTURES.some((a) => a.classes.includes(c))));
  if (!arch || unknown.length > 0) {
    const what = [modelType === undefined ? 'no model_type' : `model_type "${modelType}"`, ...unknown].join(', ');
    throw new InputError(`${path}: ${what} is not supported (supported: ${SUPPORTED_MODELS})`);
  }
  return arch;
}

/**
 * The spec of a parsed config.json; `path` names it in messages. `tensors` are the checkpoint's tensor
 * names where there is a checkpoint (some architectures read optional tensors, such as Qwen2's biases, from them).
 */
export function specFromConfig(json: Json, path: string, generation?: Json, tensors: ReadonlySet<string> | null = null): DecoderSpec {
  const arch = architectureOf(json, path);
  const raw = arch.config ? arch.config(json, new ConfigReader(path, json)) : json;
  const cfg = new ConfigReader(path, raw);
  const own = arch.ownKeys ?? [];
  const baseCfg = own.length ? new ConfigReader(path, Object.fromEntries(Object.entries(raw).filter(([k]) => !own.includes(k)))) : cfg;
  const base = llamaBaseSpec(baseCfg, generation);
  const prefixes = arch.tensorPrefixes;
  const names = tensors && prefixes ? new Set([...tensors].map((t) => checkpointTensorName(t, prefixes))) : tensors;
  return { ...base, ...arch.differences({ cfg, base, tensors: names }), architecture: arch.name };
}

/** The stored-name prefixes a checkpoint of this config.json wraps its text model in (none for most architectures). */
export function tensorPrefixesOf(json: Json, path: string): readonly string[] {
  return architectureOf(json, path).tensorPrefixes ?? [];
}

/**
 * A config.json that reads back (specFromConfig) as `spec`: the Llama baseline's keys with what the spec's
 * architecture writes differently, under its text-only class (for models made from a spec, such as a GGUF's).
 */
export function configJsonOf(spec: DecoderSpec): Json {
  const arch = ARCHITECTURES.find((a) => a.name === spec.architecture && a.tensorPrefixes === undefined);
  if (!arch) throw new InputError(`architecture "${spec.architecture}" is not supported (supported: ${SUPPORTED_MODELS})`);
  const base = llamaConfigJson(spec);
  const json = arch.configJson ? arch.configJson(spec, base) : base;
  return { ...json, architectures: [arch.classes[0]!], model_type: arch.modelType };
}

/**
 * The config.json of a model holding only the text model of `json`: for a wrapping checkpoint (Gemma 3 multimodal)
 * its resolved text config under the text-only class; any other config as it is.
 */
export function textModelConfig(json: Json, path: string): Json {
  const arch = architectureOf(json, path);
  if (!arch.textModel || !arch.config) return json;
  const text = arch.config(json, new ConfigReader(path, json));
  return { ...text, architectures: [arch.textModel.classes[0]!], model_type: arch.textModel.modelType };
}

/** Reads `<dir>/config.json` (with generation_config.json and the checkpoint's tensor names when present) into a spec. */
export function readModelSpec(dir: string): DecoderSpec {
  const path = join(dir, 'config.json');
  const genPath = join(dir, 'generation_config.json');
  return specFromConfig(readJsonFile(path), path, existsSync(genPath) ? readJsonFile(genPath) : undefined, tensorNamesIn(dir));
}
