// Lower-precision weights without a calibration step: float16 storage (Cast to float32 before use)
// and int8 weights with dynamically quantized int8 activations (com.microsoft DynamicQuantizeMatMul).
import { fromFloat32 } from '../../formats/dtype.js';
import { Elem, MS_DOMAIN } from '../../formats/onnx/graph.js';
import { transpose2d } from '../../core/weights.js';
import { addBias, f32bytes, type LinearEmitter } from '../../model/linear.js';
import { gemmHead, type EmbeddingEmitter } from '../../model/embedding.js';
import { EMBED_TOKENS } from '../../core/spec.js';

// Why Cast rather than float16 activations: onnxruntime's CPU provider has no float16 MatMul on
// x86, so a graph that keeps float32 activations runs unchanged on CPU and CUDA. onnxruntime CPU
// (1.30, graphOptimizationLevel 'all') constant-folds Cast(initializer) at session creation: the
// optimized model holds the weights as float32 initializers and the Cast nodes are gone. So fp16
// halves the files on disk and the download, but on CPU the weights are widened to float32 in memory
// (test/passes/quantize-ops.test.ts checks this with optimizedModelFilePath).

/** float16 weight [in, out], Cast to float32, then MatMul: half the bytes on disk. */
export const fp16Linear: LinearEmitter = async (g, weights, layer, x) => {
  const w = await weights.readFloat32(`${layer.module}.weight`);
  const wT = transpose2d(w, layer.outFeatures, layer.inFeatures);
  const name = g.initializer(`${layer.module}.weight`, Elem.FLOAT16, [layer.inFeatures, layer.outFeatures], fromFloat32(wT, 'F16'));
  const wide = g.op('Cast', [name], `${layer.path}/WeightCast`, { to: { int: Elem.FLOAT } });
  return addBias(g, weights, layer, g.op('MatMul', [x, wide], `${layer.path}/MatMul`));
};

/**
 * A float16 embedding table: Gather first, then Cast the gathered rows, so the table itself stays
 * float16 in the graph. A tied lm_head Casts the whole table (folded into a float32 copy on CPU).
 */
export const fp16Embedding: EmbeddingEmitter = {
  async gather(g, weights, spec, inputIds) {
    const w = await weights.readFloat32(EMBED_TOKENS);
    const embed = g.initializer(EMBED_TOKENS, Elem.FLOAT16, [spec.vocabSize, spec.hiddenSize], fromFloat32(w, 'F16'));
    const rows = g.op('Gather', [embed, inputIds], '/model/embed_tokens/Gather', { axis: { int: 0 } });
    return g.op('Cast', [rows], '/model/embed_tokens/Cast', { to: { int: Elem.FLOAT } });
  },
  tiedHead(g, spec, x) {
    const wide = g.op('Cast', [EMBED_TOKENS], '/lm_head/WeightCast', { to: { int: Elem.FLOAT } });
    return gemmHead(g, spec, x, wide);
  },
};

/**
 * The largest weight code: 63, not 127 (onnxruntime's quantizer calls this reduce_range). On x86 CPUs
 * without VNNI, onnxruntime's u8 x s8 kernel adds pairs of products in int16 (vpmaddubsw), which
 * saturates once 2 x 255 x |w| exceeds 32767: with codes up to 127 DynamicQuantizeMatMul was off by
 * 31% on an AVX2-only machine, with codes up to 63 by 0.4% (test/passes/quantize-ops.test.ts).
 */
export const W8A8_QMAX = 63;

/** Symmetric per-output-channel int8 codes of a [out, in] weight, transposed to [in, out], and their scales. */
export function quantizePerChannelInt8(w: Float32Array, out: number, inFeatures: number): { codes: Int8Array; scales: Float32Array } {
  const codes = new Int8Array(out * inFeatures);
  const scales = new Float32Array(out);
  for (let n = 0; n < out; n++) {
    let absmax = 0;
    for (let k = 0; k < inFeatures; k++) absmax = Math.max(absmax, Math.abs(w[n * inFeatures + k]!));
    const scale = Math.fround(absmax === 0 ? 1 : absmax / W8A8_QMAX);
    scales[n] = scale;
    for (let k = 0; k < inFeatures; k++)
      codes[k * out + n] = Math.max(-W8A8_QMAX, Math.min(W8A8_QMAX, Math.round(w[n * inFeatures + k]! / scale)));
  }
  return { codes, scales };
}

/**
 * W8A8: int8 weights [K, N] with one scale per output channel, activations quantized to 8 bits per
 * tensor at run time by DynamicQuantizeMatMul (zero point omitted: the default 0 is symmetric).
 */
export const w8a8Linear: LinearEmitter = async (g, weights, layer, x) => {
  const w = await weights.readFloat32(`${layer.module}.weight`);
  const { codes, scales } = quantizePerChannelInt8(w, layer.outFeatures, layer.inFeatures);
  const b = g.initializer(`${layer.module}.weight_int8`, Elem.INT8, [layer.inFeatures, layer.outFeatures], new Uint8Array(codes.buffer));
  const s = g.initializer(`${layer.module}.weight_scale`, Elem.FLOAT, [layer.outFeatures], f32bytes(scales));
  const y = g.op('DynamicQuantizeMatMul', [x, b, s], `${layer.path}/DynamicQuantizeMatMul`, undefined, MS_DOMAIN);
  return addBias(g, weights, layer, y);
};
