// Importance scores for pruning a linear weight [rows = out_features, cols = in_features]: magnitude
// |W|, and Wanda's |W_ij| * ||x_j||_2, which weighs each weight by how strongly its input fires.
import { InputError } from '../../core/errors.js';

/** |W|, elementwise. */
export function magnitudeScores(w: Float32Array): Float32Array {
  const out = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) out[i] = Math.abs(w[i]!);
  return out;
}

/**
 * Wanda scores |W_ij| * sqrt(inputSqNorms_j), where inputSqNorms [cols] is the sum over calibration
 * tokens of x_j^2 (the diagonal of the Gram matrix H). Returns [rows, cols].
 */
export function wandaScores(w: Float32Array, rows: number, cols: number, inputSqNorms: Float64Array): Float32Array {
  if (w.length !== rows * cols) throw new InputError(`weight has ${w.length} values, expected ${rows}x${cols}`);
  if (inputSqNorms.length !== cols) throw new InputError(`input norms have ${inputSqNorms.length} values, expected ${cols}`);
  const norms = new Float64Array(cols); // [cols]
  for (let j = 0; j < cols; j++) {
    const s = inputSqNorms[j]!;
    if (!(s >= 0) || !Number.isFinite(s))
      throw new InputError('calibration statistics (input norms) contain negative or non-finite values');
    norms[j] = Math.sqrt(s);
  }
  const out = new Float32Array(rows * cols); // [rows, cols]
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let j = 0; j < cols; j++) out[base + j] = Math.abs(w[base + j]!) * norms[j]!;
  }
  return out;
}
