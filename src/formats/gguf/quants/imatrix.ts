// llama.cpp's importance matrix file (llama-imatrix's GGUF output) read into per-tensor importance
// vectors, the values llama-quantize passes as quant_weights: sum of x^2 over tokens / token count.
import { InputError } from '../../../core/errors.js';
import { type GgufFile, readGgufHeader, readGgufTensor } from '../file.js';

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
    for (let j = 0; j < counts.length; j++) {
      const c = counts[j]!;
      for (let i = 0; i < ne0; i++) values[j * ne0 + i] = c > 0 ? Math.fround(sums[j * ne0 + i]! / c) : 1;
    }
    out.set(name, values);
  }
  if (out.size === 0) fail('it holds no "*.in_sum2" tensors');
  return out;
}
