// The weight precisions transformers.js selects with `dtype`, as the emitters export builds each variant
// with: fp16 weights, int8 or int4 MatMulNBits (round-to-nearest, blocks of 32, symmetric), and q4f16's int4
// layers with an fp16 embedding and lm_head. Every variant keeps float32 inputs, outputs and KV cache.
import type { EmbeddingEmitter } from '../../model/embedding.js';
import type { LinearEmitter } from '../../model/linear.js';
import { quantizeRtn } from '../quantize/blockwise.js';
import { matMulNBitsLinear } from '../quantize/matmul-nbits.js';
import { fp16Embedding, fp16Linear } from '../quantize/precision.js';

export const TJS_DTYPES = ['fp32', 'fp16', 'q8', 'q4', 'q4f16'] as const;
export type TjsDtype = (typeof TJS_DTYPES)[number];

/** transformers.js's file suffix per dtype (model<suffix>.onnx). */
export const TJS_SUFFIX: Record<TjsDtype, string> = { fp32: '', fp16: '_fp16', q8: '_quantized', q4: '_q4', q4f16: '_q4f16' };

/** How one dtype's weights are emitted (float32 MatMul and embedding where a field is absent). */
export function dtypeEmitters(dtype: TjsDtype): { linear?: LinearEmitter; embedding?: EmbeddingEmitter } {
  const blocks = (bits: 4 | 8) =>
    matMulNBitsLinear({
      accuracyLevel: 0,
      exclude: (module) => module.startsWith('lm_head'),
      quantize: (layer, w) => quantizeRtn(w, layer.outFeatures, layer.inFeatures, { bits, blockSize: 32, symmetric: true }),
    });
  switch (dtype) {
    case 'fp32':
      return {};
    case 'fp16':
      return { linear: fp16Linear, embedding: fp16Embedding };
    case 'q8':
      return { linear: blocks(8) };
    case 'q4':
      return { linear: blocks(4) };
    case 'q4f16': {
      const int4 = blocks(4);
      return {
        linear: (g, w, layer, x) => (layer.module.startsWith('lm_head') ? fp16Linear : int4)(g, w, layer, x),
        embedding: fp16Embedding,
      };
    }
  }
}
