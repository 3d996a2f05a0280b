// Sub-word integer codes packed into little-endian int32 words, as compressed-tensors' pack_to_int32
// (compressors/quantized_compressors/pack_quantized.py) lays them out; GPTQ's qweight/qzeros use the same order.

/**
 * Packs unsigned `bits`-wide values of a row-major [rows, cols] matrix into little-endian int32 words along
 * `dim`, as compressed-tensors' pack_to_int32 lays them out after its +2^(bits-1) shift. Returns the bytes
 * of the I32 tensor [rows, ceil(cols*bits/32)] (dim 1) or [ceil(rows*bits/32), cols] (dim 0).
 */
export function packInt32(values: Uint8Array, rows: number, cols: number, bits: 4 | 8, dim: 0 | 1): Uint8Array {
  const perWord = 32 / bits;
  const wordsAlong = Math.ceil((dim === 1 ? cols : rows) / perWord);
  const out = new Uint8Array((dim === 1 ? rows * wordsAlong : wordsAlong * cols) * 4);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c]!;
      if (v >>> bits) throw new Error(`value ${v} at [${r}, ${c}] does not fit in ${bits} bits`);
      // Bit offset of the value within the little-endian byte stream of its word run.
      const bit = dim === 1 ? (r * wordsAlong * perWord + c) * bits : wordBit(r, c, cols, perWord, bits);
      out[bit >>> 3]! |= v << (bit & 7);
    }
  }
  return out;
}

/** Inverse of {@link packInt32}: the unsigned values [rows, cols] in little-endian packed I32 bytes. */
export function unpackInt32(bytes: Uint8Array, rows: number, cols: number, bits: 4 | 8, dim: 0 | 1): Uint8Array {
  const perWord = 32 / bits;
  const wordsAlong = Math.ceil((dim === 1 ? cols : rows) / perWord);
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const bit = dim === 1 ? (r * wordsAlong * perWord + c) * bits : wordBit(r, c, cols, perWord, bits);
      out[r * cols + c] = (bytes[bit >>> 3]! >>> (bit & 7)) & mask;
    }
  }
  return out;
}

// Packing along dim 0: word (floor(r / perWord), c) holds row r at slot r % perWord.
function wordBit(r: number, c: number, cols: number, perWord: number, bits: number): number {
  return (Math.floor(r / perWord) * cols + c) * 32 + (r % perWord) * bits;
}
