// How the token embedding and a tied lm_head become ONNX nodes: float32 Gather and Gemm by default; quantization
// and the fp16 variants supply their own EmbeddingEmitter.
import { Elem, type GraphBuilder } from '../formats/onnx/graph.js';
import { EMBED_TOKENS, type DecoderSpec } from '../core/spec.js';
import type { WeightSource } from '../core/weights.js';
import { f32bytes } from './linear.js';

/**
 * How the token embedding is emitted, and the lm_head when it is tied to it (sharing the stored
 * weight). Quantization supplies a block-quantized one; the default is float.
 */
export interface EmbeddingEmitter {
  /** ids [B, S] -> hidden [B, S, h]. */
  gather(g: GraphBuilder, weights: WeightSource, spec: DecoderSpec, inputIds: string): Promise<string>;
  /** Tied lm_head: normed hidden [B, S, h] -> logits [B, S, V], reusing what `gather` stored. */
  tiedHead(g: GraphBuilder, spec: DecoderSpec, x: string): string;
}

/** float32 Gather; a tied lm_head reuses the [V, h] weight through Gemm(transB), stored once. */
export const floatEmbedding: EmbeddingEmitter = {
  async gather(g, weights, spec, inputIds) {
    const embed = g.initializer(
      EMBED_TOKENS,
      Elem.FLOAT,
      [spec.vocabSize, spec.hiddenSize],
      f32bytes(await weights.readFloat32(EMBED_TOKENS)),
    );
    return g.op('Gather', [embed, inputIds], '/model/embed_tokens/Gather', { axis: { int: 0 } });
  },
  tiedHead: (g, spec, x) => gemmHead(g, spec, x, EMBED_TOKENS),
};

/** logits [B, S, V] = x [B, S, h] times weight [V, h] transposed, through a 2-D Gemm(transB): no stored transpose. */
export function gemmHead(g: GraphBuilder, spec: DecoderSpec, x: string, weight: string): string {
  const h = spec.hiddenSize;
  const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
  const flat = g.op('Reshape', [x, i64(`/const/shape_-1_${h}`, [-1, h])], '/lm_head/Flatten');
  const gemm = g.op('Gemm', [flat, weight], '/lm_head/Gemm', { transB: { int: 1 } });
  return g.op('Reshape', [gemm, outputShape(g, x, spec.vocabSize)], '/lm_head/Reshape');
}

/** [B, S, V] from x [B, S, h]: the shape Reshape needs after a 2-D Gemm. */
function outputShape(g: GraphBuilder, x: string, vocab: number): string {
  const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
  const bs = g.op(
    'Slice',
    [g.op('Shape', [x], '/lm_head/Shape'), i64('/const/starts_0', [0]), i64('/const/ends_2', [2])],
    '/lm_head/BatchSeq',
  );
  return g.op('Concat', [bs, i64(`/const/vocab_${vocab}`, [vocab])], '/lm_head/OutShape', { axis: { int: 0 } });
}
