// Where graph builders and passes get weights from: a checkpoint read tensor by tensor, so that
// building a graph never holds more than one weight in memory.

/** A read-only source of named float weights ([out, in] Hugging Face layout). */
export interface WeightSource {
  has(name: string): boolean;
  shape(name: string): number[];
  /** The tensor widened to float32 (a fresh array the caller may keep or modify). */
  readFloat32(name: string): Promise<Float32Array>;
}

/** Transposes a row-major [rows, cols] matrix into [cols, rows]. */
export function transpose2d(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  // Blocked so both reads and writes stay in cache for wide matrices.
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        const src = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = m[src + c]!;
      }
    }
  }
  return out;
}

/** A weight source with some tensors replaced (compressed layers), the rest read from `base`. */
export function overlayWeights(base: WeightSource, replaced: ReadonlyMap<string, Float32Array>): WeightSource {
  return {
    has: (name) => replaced.has(name) || base.has(name),
    shape: (name) => base.shape(name),
    readFloat32: async (name) => {
      const r = replaced.get(name);
      return r ? r.slice() : base.readFloat32(name);
    },
  };
}
