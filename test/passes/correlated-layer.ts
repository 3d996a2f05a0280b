// A small linear layer with correlated calibration inputs, for the tests of GPTQ and SparseGPT: the
// weights, the Gram matrix of the inputs, and the output error of a changed weight through it.
import { seededRandom } from '../../src/runtime/sampling.js';

/** Standard normal samples from a uniform generator (Box-Muller). */
export function normal(rand: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/**
 * A layer W [rows, cols] and the Gram matrix H [cols, cols] of inputs X [tokens, cols] with correlated
 * columns (a `latent`-dimensional latent mixed into every column, plus noise) and uneven column scales.
 */
export function correlatedLayer(
  seed: number,
  rows: number,
  cols: number,
  tokens: number,
  latent: number,
): { w: Float32Array; h: Float64Array } {
  const g = normal(seededRandom(seed));
  const w = Float32Array.from({ length: rows * cols }, () => g() * 0.05); // [rows, cols]
  const mix = Float64Array.from({ length: latent * cols }, g); // [latent, cols]
  const colScale = Float64Array.from({ length: cols }, () => Math.exp(0.8 * g()));
  const x = new Float64Array(cols); // one token [cols]
  const z = new Float64Array(latent);
  const h = new Float64Array(cols * cols);
  for (let t = 0; t < tokens; t++) {
    for (let k = 0; k < latent; k++) z[k] = g();
    for (let j = 0; j < cols; j++) {
      let s = 0.3 * g();
      for (let k = 0; k < latent; k++) s += z[k]! * mix[k * cols + j]!;
      x[j] = s * colScale[j]!;
    }
    for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) h[i * cols + j] += x[i]! * x[j]!;
  }
  return { w, h };
}

/** ||W X^T - W' X^T||_F^2 = sum over rows of (w - w') H (w - w')^T, H optionally ridged. */
export function outputError(w: ArrayLike<number>, v: ArrayLike<number>, h: Float64Array, rows: number, cols: number, ridge = 0): number {
  let total = 0;
  const d = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) d[j] = w[r * cols + j]! - v[r * cols + j]!;
    for (let i = 0; i < cols; i++) {
      let s = ridge * d[i]!;
      for (let j = 0; j < cols; j++) s += h[i * cols + j]! * d[j]!;
      total += d[i]! * s;
    }
  }
  return total;
}
