// What an architecture is to llmopt: the config.json it is read from and what it changes in the Llama
// baseline spec. The graph builder (model/decoder.ts) never sees an architecture, only the spec.
import { InputError } from '../../core/errors.js';
import { PROJECTIONS, layerTensorNames, type DecoderSpec, type Projection } from '../../core/spec.js';
import type { ConfigReader, Json } from '../../formats/hf-config.js';

/** What an architecture reads: config.json, the baseline spec read from it, the checkpoint's tensor names (null for an artifact). */
export interface ArchitectureInput {
  cfg: ConfigReader;
  base: DecoderSpec;
  tensors: ReadonlySet<string> | null;
}

/** One architecture: how config.json names it and how its spec differs from Llama's. */
export interface Architecture {
  /** llmopt's name for it (DecoderSpec.architecture; inspect shows it). */
  name: string;
  /** config.json `model_type`. */
  modelType: string;
  /** The Hugging Face classes (config.json `architectures`) it builds. */
  classes: readonly string[];
  /** How the list of supported models names it, when more than modelType. */
  label?: string;
  /**
   * config.json keys the architecture reads itself in `differences` (Phi-3's partial_rotary_factor and longrope
   * rope_scaling, Gemma's hidden_act beside its hidden_activation): the baseline, which refuses what Llama does
   * not have, does not see them.
   */
  ownKeys?: readonly string[];
  /** The config the baseline and differences() read, from config.json (Gemma 3: text_config over its defaults). */
  config?: (json: Json, cfg: ConfigReader) => Json;
  /**
   * Stored tensor-name prefixes of a checkpoint that wraps the text model (Gemma 3 multimodal: language_model.*); a name
   * under one is read as the Hugging Face text model's name with the prefix removed (see checkpointTensorName).
   */
  tensorPrefixes?: readonly string[];
  /**
   * The text-only architecture a wrapping checkpoint's text model is saved as (Gemma 3 multimodal -> gemma3_text): a
   * student distilled from it has no vision tower, so its config.json is the text model's, under that class.
   */
  textModel?: Architecture;
  /**
   * config.json for a spec of this architecture, from the Llama baseline's (formats/hf-config.ts llamaConfigJson):
   * what it writes differently; specFromConfig reads it back to the same spec. Absent: the baseline's keys.
   */
  configJson?: (spec: DecoderSpec, base: Json) => Json;
  /** The spec's differences from the Llama baseline; throws InputError, naming the key, for what llmopt cannot build. */
  differences(input: ArchitectureInput): Partial<DecoderSpec>;
}

/** Refuses `use_sliding_window: true` (Qwen2, Qwen3, SmolLM3): the runtime attends to the whole context. */
export function refuseSlidingWindow(cfg: ConfigReader): void {
  if (cfg.bool('use_sliding_window', false))
    cfg.fail('use_sliding_window', 'true is not supported (sliding-window attention; supported: false)');
}

/**
 * Which projections carry a bias, from the tensors of layer 0 when the checkpoint is at hand (the other
 * layers are then checked to match), else `fallback` (what the Hugging Face class builds).
 */
export function biasesFromTensors(tensors: ReadonlySet<string> | null, fallback: Record<Projection, boolean>): Record<Projection, boolean> {
  if (!tensors) return fallback;
  const n = layerTensorNames(0);
  const found = {} as Record<Projection, boolean>;
  for (const p of PROJECTIONS) found[p] = tensors.has(`${n[p]}.bias`);
  return found;
}

/** A per-layer list of 0/1 flags from config.json, `key` naming it in errors; its length must be the layer count. */
export function layerFlags(cfg: ConfigReader, key: string, numLayers: number): boolean[] {
  const v = cfg.json[key];
  if (!Array.isArray(v) || v.some((x) => x !== 0 && x !== 1 && x !== true && x !== false)) {
    cfg.fail(key, `must be a list of 0 and 1 per layer, found ${JSON.stringify(v)}`);
  }
  if (v.length !== numLayers) {
    throw new InputError(`${cfg.path}: "${key}" has ${v.length} entries, but num_hidden_layers is ${numLayers}`);
  }
  return v.map((x) => x === 1 || x === true);
}

/**
 * The text model's name of a stored tensor under one of `prefixes`: language_model.model.x -> model.x,
 * model.language_model.x -> model.x (the two layouts transformers has saved Gemma 3 in); other names unchanged.
 */
export function checkpointTensorName(stored: string, prefixes: readonly string[]): string {
  for (const p of prefixes) {
    if (!stored.startsWith(p)) continue;
    const rest = stored.slice(p.length);
    return p.startsWith('model.') ? `model.${rest}` : rest;
  }
  return stored;
}
