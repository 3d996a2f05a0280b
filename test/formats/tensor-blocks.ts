// Row-major float32 block helpers shared by the tests that rebuild an engine's per-rank split (TensorRT-LLM's
// converters) or reassemble one: concatenation along rows and columns, numpy.split along an axis, a column range.
import assert from 'node:assert/strict';

/** Concatenates arrays end to end (row-major blocks along rows). */
export function cat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Concatenates row-major [rows, c_k] blocks along columns: [rows, sum c_k]. */
export function concatCols(blocks: Float32Array[], rows: number): Float32Array {
  const width = blocks.reduce((a, b) => a + b.length / rows, 0);
  const out = new Float32Array(rows * width);
  for (let i = 0; i < rows; i++) {
    let off = 0;
    for (const b of blocks) {
      const w = b.length / rows;
      out.set(b.subarray(i * w, (i + 1) * w), i * width + off);
      off += w;
    }
  }
  return out;
}

/** numpy.split(v, tp, axis)[rank] of a row-major [rows, cols] matrix (or a vector): equal parts or an error. */
export function split(v: Float32Array, shape: number[], tp: number, rank: number, axis: 0 | 1): Float32Array {
  const [rows, cols] = shape.length === 2 ? (shape as [number, number]) : [shape[0]!, 1];
  const n = (axis === 0 ? rows : cols) / tp;
  assert.ok(Number.isInteger(n), `array split does not result in an equal division (${shape} over ${tp})`);
  if (tp === 1) return v;
  if (axis === 0) return v.slice(rank * n * cols, (rank + 1) * n * cols);
  return columns(v, rows, rank * n, (rank + 1) * n);
}

/** Columns [from, to) of a row-major matrix of `nRows` rows. */
export function columns(m: Float32Array, nRows: number, from: number, to: number): Float32Array {
  const cols = m.length / nRows;
  const out = new Float32Array(nRows * (to - from));
  for (let r = 0; r < nRows; r++) out.set(m.subarray(r * cols + from, r * cols + to), r * (to - from));
  return out;
}
