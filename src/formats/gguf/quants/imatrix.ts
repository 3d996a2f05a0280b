// llama.cpp's importance matrix file (llama-imatrix's GGUF output) read into per-tensor importance
// vectors, the values llama-quantize passes as quant_weights: sum of x^2 over tokens / token count; and written.
import { InputError } from '../../../core/errors.js';
import { type GgufFile, readGgufHeader, readGgufTensor, writeGguf } from '../file.js';

/** The importance llama-quantize derives from one matrix's sums and token count: in_sum2 / count in float32, 1 at count 0. */
export function importanceFromSums(sums: Float32Array, count: number): Float32Array {
  const c = Math.fround(count);
  return Float32Array.from(sums, (s) => (c > 0 ? Math.fround(s / c) : 1));
}

/** One weight's entry of an importance matrix: the summed squared inputs per column and the tokens summed. */
export interface ImatrixEntry {
  /** The GGUF weight's name (`blk.0.attn_q.weight`). */
  name: string;
  /** sum over tokens of x_j^2, float32 [ne0]. */
  sums: Float32Array;
  tokens: number;
}

/**
 * Writes entries as llama-imatrix lays its GGUF out (general.type imatrix; per weight `W.in_sum2` F32 [1, ne0] and
 * `W.counts` F32 [1, 1]; the datasets and chunk count and size it records), which llama-quantize --imatrix and
 * {@link readImatrix} read; temp beside the target, renamed at the end.
 */
export async function writeImatrix(
  path: string,
  entries: readonly ImatrixEntry[],
  about: { datasets: string[]; chunks: number; chunkSize: number },
): Promise<{ bytes: number }> {
  if (entries.length === 0) throw new InputError(`${path}: an importance matrix needs at least one weight`);
  const f32 = (a: Float32Array) => () => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  return writeGguf(
    path,
    [
      ['general.type', { type: 'string', value: 'imatrix' }],
      ['imatrix.datasets', { type: 'array', itemType: 'string', value: about.datasets }],
      ['imatrix.chunk_count', { type: 'u32', value: about.chunks }],
      ['imatrix.chunk_size', { type: 'u32', value: about.chunkSize }],
    ],
    entries.flatMap((e) => [
      { name: `${e.name}.in_sum2`, shape: [1, e.sums.length], type: 'F32' as const, data: f32(e.sums) },
      { name: `${e.name}.counts`, shape: [1, 1], type: 'F32' as const, data: f32(new Float32Array([e.tokens])) },
    ]),
  );
}

/**
 * Reads an imatrix GGUF: for each weight W, tensors `W.in_sum2` (F32 [n_mat, ne0], the summed squared
 * inputs of each of its n_mat matrices, one for a plain linear layer) and `W.counts` (F32 [n_mat], the
 * tokens summed). Returns, by weight name, in_sum2 / count in float32 (1 where a count is 0), as
 * llama-quantize's load_imatrix computes them; [n_mat * ne0] values, expert after expert.
 */
export async function readImatrix(path: string): Promise<Map<string, Float32Array>> {
  const file: GgufFile = readGgufHeader(path);
  const fail = (what: string): never => {
    throw new InputError(`${path}: not an importance matrix: ${what}`);
  };
  const byName = new Map(file.tensors.map((t) => [t.name, t]));
  const out = new Map<string, Float32Array>();
  for (const t of file.tensors) {
    if (!t.name.endsWith('.in_sum2')) continue;
    const name = t.name.slice(0, -'.in_sum2'.length);
    const countsInfo = byName.get(`${name}.counts`) ?? fail(`"${t.name}" has no "${name}.counts"`);
    if (t.type !== 'F32' || countsInfo.type !== 'F32') fail(`"${name}" is not stored as F32`);
    const sums = new Float32Array((await readGgufTensor(file, t)).slice().buffer);
    const counts = new Float32Array((await readGgufTensor(file, countsInfo)).slice().buffer);
    if (counts.length === 0 || sums.length % counts.length !== 0) fail(`"${name}": ${sums.length} sums for ${counts.length} counts`);
    const ne0 = sums.length / counts.length;
    const values = new Float32Array(sums.length);
    for (let j = 0; j < counts.length; j++) values.set(importanceFromSums(sums.subarray(j * ne0, (j + 1) * ne0), counts[j]!), j * ne0);
    out.set(name, values);
  }
  if (out.size === 0) fail('it holds no "*.in_sum2" tensors');
  return out;
}
