// The decoder graph's I/O contract: every input and output name the graph builders write and the
// runtime, calibration and training feed, per attention form, and what each form implies.
import { InputError } from './errors.js';

/** fused and inplace need onnxruntime (com.microsoft ops); inplace's cache I/O is llmopt's own (see model/attention.ts). */
export const ATTENTION_FORMS = ['fused', 'standard', 'inplace'] as const;
export type AttentionForm = (typeof ATTENTION_FORMS)[number];

/** Names of the graph's inputs and outputs, in the decoder convention of onnxruntime-genai / transformers.js. */
export const io = {
  inputIds: 'input_ids',
  attentionMask: 'attention_mask',
  /**
   * Graphs whose sliding layers keep only their window (the runtime trims those caches): the mask over the sliding
   * layers' own cache slots and the step's tokens, [B, local slots + S], as attention_mask is over the whole cache's.
   */
  attentionMaskLocal: 'attention_mask_local',
  positionIds: 'position_ids',
  logits: 'logits',
  /** inplace form: flat indices into the step's [batch * seq] positions whose logits to compute, [batch, n]. */
  logitsIndex: 'logits_index',
  pastKey: (i: number) => `past_key_values.${i}.key`,
  pastValue: (i: number) => `past_key_values.${i}.value`,
  presentKey: (i: number) => `present.${i}.key`,
  presentValue: (i: number) => `present.${i}.value`,
  /**
   * inplace form: the cache the runtime owns (keys transposed [B, kvH, D, C], values [B, kvH, C, D])
   * and a step's new entries [B, kvH, S, D].
   */
  cacheKey: (i: number) => `kv_cache.${i}.key`,
  cacheValue: (i: number) => `kv_cache.${i}.value`,
  newKey: (i: number) => `kv_new.${i}.key`,
  newValue: (i: number) => `kv_new.${i}.value`,
  /** Block and pipeline-stage graphs: the residual stream [B, S, h] in and out. */
  hiddenStates: 'hidden_states',
  hiddenStatesOut: 'hidden_states_out',
  /** A rank's share of a hidden-state sum under tensor parallelism (the runtime all-reduces it). */
  partialHiddenStates: 'partial_hidden_states',
  /**
   * Sandwich norms under tensor parallelism: the all-reduced sum of the previous block's shares, which the next
   * segment norms (the previous block's post norm) and adds to hidden_states itself, returning the result too.
   */
  partialSum: 'partial_sum',
  /** Each layer's output (the residual stream after it), exposed for distillation's hidden loss. */
  hiddenLayer: (layer: number) => `hidden.layers.${layer}`,
} as const;

/** Inputs of a layer's linear layers that block graphs expose: q/k/v share one, gate/up another. */
export type CaptureName = 'attn_in' | 'o_in' | 'mlp_in' | 'down_in';
export const CAPTURE_NAMES: readonly CaptureName[] = ['attn_in', 'o_in', 'mlp_in', 'down_in'];
/** A captured input's raw activations [B, S, F] and its Gram matrix [F, F], as graph outputs. */
export const captureOutput = (layer: number, name: CaptureName) => `capture.layers.${layer}.${name}`;
export const gramOutput = (layer: number, name: CaptureName) => `gram.layers.${layer}.${name}`;

/** What a graph of one attention form needs from whoever builds, runs, shards or loads it. */
export interface AttentionTraits {
  /** Operator domains of the graph: ai.onnx alone runs anywhere; com.microsoft needs onnxruntime. */
  ops: readonly ('ai.onnx' | 'com.microsoft')[];
  /**
   * Who owns the KV cache. graph: the graph returns the whole cache (present.*) and the runtime feeds
   * it back as the next past_key_values.*. runtime: the runtime keeps buffers the graph reads
   * (kv_cache.*) and writes the step's new entries (kv_new.*) into them itself.
   */
  cacheOwner: 'graph' | 'runtime';
  /** Whether the graph takes logits_index and computes logits only at those rows. */
  selectsLogits: boolean;
  /** Whether the graph takes position_ids (GroupQueryAttention derives positions from the mask). */
  positionIds: boolean;
  /** Whether the shard pass can cut it into rank graphs (ranks keep their caches in past/present form). */
  shardable: boolean;
  /** Whether transformers.js can load it (its cache I/O is onnxruntime-genai's past/present). */
  transformersJs: boolean;
}

const ORT = ['ai.onnx', 'com.microsoft'] as const;
export const ATTENTION: Readonly<Record<AttentionForm, AttentionTraits>> = {
  fused: { ops: ORT, cacheOwner: 'graph', selectsLogits: false, positionIds: false, shardable: true, transformersJs: true },
  standard: { ops: ['ai.onnx'], cacheOwner: 'graph', selectsLogits: false, positionIds: true, shardable: true, transformersJs: true },
  inplace: { ops: ORT, cacheOwner: 'runtime', selectsLogits: true, positionIds: true, shardable: false, transformersJs: false },
};

/** The forms `llmopt shard` builds rank graphs in. */
export const SHARDABLE_FORMS = ATTENTION_FORMS.filter((f) => ATTENTION[f].shardable) as [AttentionForm, ...AttentionForm[]];

/** Layer i's cache inputs (key, value) of a graph of `form`: past_key_values, or kv_cache when the runtime owns the cache. */
export function cacheInputs(form: AttentionForm, i: number): [string, string] {
  return ATTENTION[form].cacheOwner === 'runtime' ? [io.cacheKey(i), io.cacheValue(i)] : [io.pastKey(i), io.pastValue(i)];
}

/** Layer i's cache outputs (key, value): the whole present cache, or only the step's new entries. */
export function cacheOutputs(form: AttentionForm, i: number): [string, string] {
  return ATTENTION[form].cacheOwner === 'runtime' ? [io.newKey(i), io.newValue(i)] : [io.presentKey(i), io.presentValue(i)];
}

/** Cache input and output names of every form, as prefixes of `{prefix}.{layer}.{key|value}`. */
const CACHE_PREFIXES = [
  { input: 'past_key_values.', output: 'present.' },
  { input: 'kv_cache.', output: 'kv_new.' },
];

/** Whether a graph input is a cache input: past_key_values.* (fused, standard) or kv_cache.* (inplace). */
export const isCacheInput = (name: string): boolean => CACHE_PREFIXES.some((p) => name.startsWith(p.input));
/** Whether a graph output is a cache output: present.* or kv_new.*. */
export const isCacheOutput = (name: string): boolean => CACHE_PREFIXES.some((p) => name.startsWith(p.output));

/** The output a cache input's next entries come back in. */
export function cacheOutputOf(input: string): string {
  const p = CACHE_PREFIXES.find((q) => input.startsWith(q.input));
  if (!p) throw new Error(`${input} is not a cache input`);
  return p.output + input.slice(p.input.length);
}

/**
 * Every input of a whole decoder graph of `form` with `numLayers` layers, in the order the builder declares them;
 * `windowed`: its sliding layers' caches hold only their window (attention_mask_local).
 */
export function decoderInputs(form: AttentionForm, numLayers: number, windowed = false): string[] {
  const t = ATTENTION[form];
  const names: string[] = [io.inputIds, io.attentionMask];
  if (windowed) names.push(io.attentionMaskLocal);
  if (t.positionIds) names.push(io.positionIds);
  for (let i = 0; i < numLayers; i++) names.push(...cacheInputs(form, i));
  if (t.selectsLogits) names.push(io.logitsIndex);
  return names;
}

const sorted = (names: readonly string[]) => [...names].sort().join('\n');

/**
 * The attention form of a decoder graph. The artifact's manifest states it (`stated`); the graph's
 * inputs only confirm it, and a mismatch is bad input naming the file. Without a manifest (a
 * transformers.js folder) the form is the one whose contract the inputs match.
 */
export function attentionFormOf(
  file: string,
  inputNames: readonly string[],
  numLayers: number,
  stated: AttentionForm | null,
): AttentionForm {
  const given = sorted(inputNames);
  const matching = ATTENTION_FORMS.filter((f) => [false, true].some((w) => sorted(decoderInputs(f, numLayers, w)) === given));
  if (stated && matching.includes(stated)) return stated;
  const found = `its inputs are ${inputNames.join(', ')}`;
  if (stated) {
    const fits = matching.length ? `; they fit the ${matching[0]} form` : '';
    throw new InputError(`${file}: the manifest says ${stated} attention, but ${found}${fits}; re-export the model`);
  }
  if (matching.length !== 1) {
    const forms = ATTENTION_FORMS.join(', ');
    throw new InputError(`${file}: not a ${numLayers}-layer llmopt decoder graph of any attention form (${forms}): ${found}`);
  }
  return matching[0]!;
}
