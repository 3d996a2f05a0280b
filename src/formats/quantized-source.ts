// A packed int checkpoint (GPTQ's or AWQ's layout) seen as float weights: each quantized module's parameter tensors
// (qweight, qzeros, scales, g_idx) disappear behind `<module>.weight`, which reads dequantized.
import { InputError } from '../core/errors.js';
import { dequantize, type BlockQuantized } from '../core/block-quant.js';
import type { WeightSource } from '../core/weights.js';
import type { Checkpoint } from './safetensors.js';

/** A quantized checkpoint read as floats, with each module's codes available too. */
export interface QuantizedCheckpointSource extends WeightSource {
  readonly dir: string;
  /** The parsed config.json. */
  readonly config: Record<string, unknown>;
  /** Names of the quantized modules. */
  readonly quantizedModules: string[];
  /** A quantized module's bits, from the layout read at open (no codes read). */
  bitsOf(module: string): 4 | 8;
  /** Logical tensor names: float tensors as stored and `<module>.weight` for each quantized module. */
  names(): string[];
  /** The module's codes, scales and zero points in llmopt's unsigned convention. */
  readQuantized(module: string): Promise<BlockQuantized>;
  close(): Promise<void>;
}

/**
 * The source over `ckpt` given each quantized module's [out, in] shape, the parameter suffixes that belong to a
 * quantized module, and how to decode one module.
 */
export function quantizedSource(
  dir: string,
  config: Record<string, unknown>,
  ckpt: Checkpoint,
  modules: Map<string, { rows: number; cols: number; bits: 4 | 8 }>,
  suffixes: readonly string[],
  decode: (module: string) => Promise<BlockQuantized>,
): QuantizedCheckpointSource {
  const owned = new Set([...modules.keys()].flatMap((m) => suffixes.map((s) => `${m}.${s}`)));
  const names = [...modules.keys()].map((m) => `${m}.weight`);
  for (const name of ckpt.names()) if (!owned.has(name)) names.push(name);
  const known = new Set(names);
  const moduleOf = (name: string) => (name.endsWith('.weight') ? modules.get(name.slice(0, -'.weight'.length)) : undefined);
  const missing = (name: string) => new InputError(`checkpoint ${dir} has no tensor named "${name}"`);
  return {
    dir,
    config,
    quantizedModules: [...modules.keys()],
    names: () => [...names],
    has: (name) => known.has(name),
    shape: (name) => {
      const m = moduleOf(name);
      if (m && !ckpt.has(name)) return [m.rows, m.cols];
      if (!known.has(name)) throw missing(name);
      return [...ckpt.info(name).shape];
    },
    readFloat32: async (name) => {
      if (moduleOf(name) && !ckpt.has(name)) return dequantize(await decode(name.slice(0, -'.weight'.length)));
      if (!known.has(name)) throw missing(name);
      return ckpt.readFloat32(name);
    },
    bitsOf: (module) => {
      const m = modules.get(module);
      if (!m) throw new InputError(`${dir}: no quantized module named "${module}"`);
      return m.bits;
    },
    readQuantized: (module) => {
      if (!modules.has(module)) throw new InputError(`${dir}: no quantized module named "${module}"`);
      return decode(module);
    },
    close: () => ckpt.close(),
  };
}

/** Little-endian int32 tensor bytes as numbers. */
export function int32Values(raw: Uint8Array): Int32Array {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Int32Array.from({ length: raw.byteLength / 4 }, (_, i) => view.getInt32(i * 4, true));
}

/** [rows, cols] row-major to [cols, rows]. */
export function transpose<T extends Uint8Array | Float32Array>(m: T, rows: number, cols: number, make: (n: number) => T): T {
  const out = make(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  return out;
}
