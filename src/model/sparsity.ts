// Facts about a weight's zeros that inspect and the pruning pass both report: the fraction of exact
// zeros, and the groups that break an N:M pattern.

/** A row-major [rows, cols] weight. */
export type WeightValues = Float32Array | Float64Array;

/** The fraction of exact zeros. */
export function sparsityOf(w: WeightValues): number {
  let zeros = 0;
  for (let i = 0; i < w.length; i++) if (w[i] === 0) zeros++;
  return w.length === 0 ? 0 : zeros / w.length;
}

/** Groups of m consecutive inputs (cols % m == 0) holding fewer than m - n zeros. */
export function countNmViolations(w: WeightValues, rows: number, cols: number, n: number, m: number): number {
  let violations = 0;
  for (let g = 0; g < rows * cols; g += m) {
    let zeros = 0;
    for (let i = g; i < g + m; i++) if (w[i] === 0) zeros++;
    if (zeros < m - n) violations++;
  }
  return violations;
}
