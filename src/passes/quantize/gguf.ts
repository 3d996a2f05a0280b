// quantize --format gguf: a Hugging Face model into one llama.cpp file of a GGUF target (q8_0, q4_0, ..., q4_k_m),
// each tensor's type as llama-quantize chooses it (formats/gguf/mix.ts), round-to-nearest with llama.cpp's scale
// choice (formats/gguf/quants) or GPTQ codes in the same block layouts; written tensor by tensor.
import { InputError } from '../../core/errors.js';
import type { DecoderSpec } from '../../core/spec.js';
import { GGML_TYPES, type GgmlType } from '../../formats/gguf/ggml-types.js';
import { GGUF_TARGETS, ggufFileType, ggufTensorDecision, type GgufTarget } from '../../formats/gguf/mix.js';
import { quantizeRows } from '../../formats/gguf/quants/index.js';
import { writeGgufModel, type GgufTensorSlot, type GgufWriteReport } from '../export/gguf.js';
import { OptionError } from '../options.js';
import { globMatcher } from '../targets.js';

export { GGUF_TARGETS, type GgufTarget };

export interface GgufQuantizeOptions {
  to: GgufTarget;
  /** Hugging Face module globs kept in float32 (`*down_proj`, `lm_head`, `model.embed_tokens`). */
  exclude: readonly string[];
  /** token_embd and output in the target's own type instead of llama.cpp's defaults for them. */
  quantizeEmbeddings: boolean;
  /**
   * A tensor whose rows do not fit its type takes llama.cpp's fallback (a K-quant's Q5_0/Q5_1/Q8_0, then F16) or,
   * for a type llama.cpp gives none (the 32-blocks and Q8_0), F16; false: refuse any fallback.
   */
  fallback: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface GgufQuantizeReport extends GgufWriteReport {
  format: 'gguf';
  to: GgufTarget;
  method: 'rtn';
  /** Tensors that did not get the type llama.cpp wanted for them, and what they got instead. */
  fallbacks: string[];
  /** Tensors kept in float32 by --exclude. */
  excluded: string[];
}

/** Checks of the GGUF options that need no file (the definition's validate calls it for --format gguf). */
export function validateGgufQuantizeOptions(o: { to: string; method: string }, given: ReadonlySet<string>): void {
  if (!(GGUF_TARGETS as readonly string[]).includes(o.to)) {
    throw new OptionError('to', (n) => `${n('to')} ${o.to}: ${n('format')} gguf writes ${GGUF_TARGETS.join(', ')}`);
  }
  for (const key of ['blockSize', 'asymmetric', 'accuracyLevel', 'attention'] as const) {
    if (given.has(key)) {
      throw new OptionError(key, (n) => `${n(key)}: not a GGUF option (llama.cpp's types fix their blocks; ${n('to')} picks one)`);
    }
  }
  if (o.method !== 'rtn') {
    throw new OptionError('method', (n) => `${n('method')} ${o.method}: ${n('format')} gguf quantizes round-to-nearest only so far`);
  }
}

/** The Hugging Face module (without .weight/.bias) of each part of a slot. */
const modulesOf = (slot: GgufTensorSlot) => slot.hf.map((n) => n.replace(/\.(weight|bias)$/, ''));

/** Writes `source` as a GGUF file of `o.to`; refuses, before writing, a fallback the user refused. */
export async function quantizeGguf(source: string, output: string, o: GgufQuantizeOptions): Promise<GgufQuantizeReport> {
  const excludedBy = globMatcher(o.exclude);
  const fallbacks: string[] = [];
  const excluded: string[] = [];
  const decide = (slot: GgufTensorSlot, spec: DecoderSpec, archName: string): GgmlType => {
    const modules = modulesOf(slot);
    const hit = modules.filter((m) => excludedBy(m));
    if (hit.length > 0 && hit.length < modules.length) {
      throw new InputError(
        `--exclude: ${hit.join(', ')} is stored with ${modules.filter((m) => !hit.includes(m)).join(', ')} in GGUF tensor "${slot.name}"; ` +
          'exclude all of them or none',
      );
    }
    if (hit.length > 0 && slot.shape.length === 2) {
      excluded.push(slot.name);
      return 'F32';
    }
    const [rows, cols] = slot.shape.length === 2 ? slot.shape : [1, slot.shape[0]!];
    const shape = { name: slot.name, layer: slot.layer, nLayers: spec.numLayers, rows: rows!, cols: cols!, arch: archName };
    const hasOutput = !spec.tiedEmbeddings;
    try {
      const d = ggufTensorDecision(o.to, { ...shape, dims: slot.shape.length }, { quantizeEmbeddings: o.quantizeEmbeddings, hasOutput });
      if (d.type !== d.wanted) {
        if (!o.fallback) throw new InputError(`GGUF ${o.to}: ${d.reason}; --no-fallback refuses it, so nothing is written`);
        fallbacks.push(`${slot.name}: ${d.wanted} -> ${d.type}`);
      }
      return d.type;
    } catch (e) {
      // A type llama.cpp gives no fallback (llama-quantize refuses the file): F16 keeps the tensor exact enough.
      if (!(e instanceof InputError) || !o.fallback || /--no-fallback/.test(e.message)) throw e;
      const wanted = o.to.toUpperCase();
      fallbacks.push(`${slot.name}: ${wanted} -> F16 (rows of ${cols} are not whole blocks; llama.cpp has no fallback)`);
      return 'F16';
    }
  };
  const report = await writeGgufModel(source, output, {
    fileType: ggufFileType(o.to),
    typeOf: (slot, spec, arch) => decide(slot, spec, arch.gguf),
    encode: (slot, data, type) => {
      const cols = slot.shape.at(-1)!;
      if (cols % GGML_TYPES[type].blockSize !== 0) throw new Error(`GGUF: ${slot.name} cannot be ${type}`);
      return quantizeRows(type, data, data.length / cols, cols);
    },
    onProgress: o.onProgress,
  });
  return { ...report, format: 'gguf', to: o.to, method: 'rtn', fallbacks, excluded };
}
