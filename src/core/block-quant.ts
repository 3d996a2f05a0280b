// The block-quantized weight layout (com.microsoft MatMulNBits' layout), shared by the quantize pass
// that produces it and the formats that store it: codes, per-block scales and zero points.

export interface BlockQuantConfig {
  bits: 4 | 8;
  blockSize: number;
  symmetric: boolean;
}

/** A quantized [rows = out_features, cols = in_features] matrix. */
export interface BlockQuantized extends BlockQuantConfig {
  rows: number;
  cols: number;
  blocksPerRow: number;
  /** Unsigned codes [rows, cols] (unpadded). */
  codes: Uint8Array;
  /** [rows, blocksPerRow] */
  scales: Float32Array;
  /** [rows, blocksPerRow] unsigned zero points; null when symmetric (implicitly 2^(bits-1)). */
  zeroPoints: Uint8Array | null;
}

export const blocksPerRow = (cols: number, blockSize: number) => Math.ceil(cols / blockSize);

/** The float matrix [rows, cols] a quantized matrix stands for (into `out` when given). */
export function dequantize(q: BlockQuantized, out: Float32Array = new Float32Array(q.rows * q.cols)): Float32Array {
  const half = 1 << (q.bits - 1);
  for (let r = 0; r < q.rows; r++) {
    for (let c = 0; c < q.cols; c++) {
      const b = Math.floor(c / q.blockSize);
      const scale = q.scales[r * q.blocksPerRow + b]!;
      const zero = q.zeroPoints ? q.zeroPoints[r * q.blocksPerRow + b]! : half;
      out[r * q.cols + c] = (q.codes[r * q.cols + c]! - zero) * scale;
    }
  }
  return out;
}
