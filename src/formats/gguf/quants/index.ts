// Rows of float32 weights to and from ggml's tensor types, as llama-quantize writes them: one entry point
// per direction over the float, legacy (32-element blocks) and K-quant (256-element super-blocks) families.
import { InputError } from '../../../core/errors.js';
import { GGML_TYPES, type GgmlType, tensorBytes } from '../ggml-types.js';
import { dequantizeFloat, quantizeFloat } from './float.js';
import { dequantizeK, quantizeK } from './kquants.js';
import { dequantizeLegacy, quantizeLegacy } from './legacy.js';

export interface QuantizeRowsOptions {
  /**
   * Per-column importance [cols] (llama.cpp's imatrix: the mean of x^2 over calibration tokens). With it
   * the types that take one use llama.cpp's weighted scale search; F32/F16/BF16 ignore it, and so does Q8_0
   * (as in llama.cpp) unless `searchQ8`.
   */
  importance?: Float32Array;
  /**
   * Q8_0 by llmopt's search of each block's fp16 scale (legacy.ts searchQ8Block), weighted by `importance`
   * when given; llama.cpp never searches Q8_0, so the default (false) keeps its bytes.
   */
  searchQ8?: boolean;
}

function checkShape(type: GgmlType, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(cols) || cols < 1) {
    throw new InputError(`${type}: bad shape ${rows}x${cols}`);
  }
  const block = GGML_TYPES[type].blockSize;
  if (cols % block !== 0) throw new InputError(`${type}: a row of ${cols} columns is not a multiple of its ${block}-element block`);
}

/**
 * Quantizes a row-major [rows, cols] float32 matrix into `type`'s bytes, byte-identical to llama-quantize
 * (ggml_quantize_chunk) on the same float32 data. `cols` must be a multiple of the type's block size.
 */
export function quantizeRows(
  type: GgmlType,
  data: Float32Array,
  rows: number,
  cols: number,
  options: QuantizeRowsOptions = {},
): Uint8Array {
  checkRows(type, data, rows, cols, options);
  return encodeRows(type, data, rows, cols, options);
}

/** What quantizeRows refuses: a shape that is not whole blocks, non-finite weights or importance values. */
export function checkRows(type: GgmlType, data: Float32Array, rows: number, cols: number, options: QuantizeRowsOptions = {}): void {
  checkShape(type, rows, cols);
  if (data.length !== rows * cols) throw new InputError(`${type}: ${data.length} values for a ${rows}x${cols} matrix`);
  const imp = options.importance;
  if (imp !== undefined && imp.length !== cols) throw new InputError(`${type}: importance has ${imp.length} values for ${cols} columns`);
  // llama.cpp refuses non-finite weights (its loader validates the data); a NaN would also poison a block's scale.
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new InputError(`${type}: value ${data[i]} at row ${Math.floor(i / cols)}, column ${i % cols}`);
  }
  if (imp?.some((v) => !Number.isFinite(v) || v < 0)) throw new InputError(`${type}: importance values must be finite and non-negative`);
}

/** quantizeRows without its checks: rows already checked (a worker's share of a checked matrix). */
export function encodeRows(type: GgmlType, data: Float32Array, rows: number, cols: number, options: QuantizeRowsOptions): Uint8Array {
  const imp = options.importance;
  switch (type) {
    case 'F32':
    case 'F16':
    case 'BF16':
      return quantizeFloat(type, data);
    case 'Q4_0':
    case 'Q4_1':
    case 'Q5_0':
    case 'Q5_1':
    case 'Q8_0':
      return quantizeLegacy(type, data, rows, cols, imp, options.searchQ8 ?? false);
    case 'Q4_K':
    case 'Q5_K':
    case 'Q6_K':
      return quantizeK(type, data, rows, cols, imp);
  }
}

/** The float32 values `type`'s bytes of a [rows, cols] matrix stand for (ggml's dequantize_row_*). */
export function dequantizeRows(type: GgmlType, bytes: Uint8Array, rows: number, cols: number): Float32Array {
  checkShape(type, rows, cols);
  const n = rows * cols;
  const expected = tensorBytes(type, n);
  if (bytes.length !== expected) throw new InputError(`${type}: ${bytes.length} bytes for a ${rows}x${cols} matrix (expected ${expected})`);
  switch (type) {
    case 'F32':
    case 'F16':
    case 'BF16':
      return dequantizeFloat(type, bytes, n);
    case 'Q4_0':
    case 'Q4_1':
    case 'Q5_0':
    case 'Q5_1':
    case 'Q8_0':
      return dequantizeLegacy(type, bytes, n);
    case 'Q4_K':
    case 'Q5_K':
    case 'Q6_K':
      return dequantizeK(type, bytes, n);
  }
}
