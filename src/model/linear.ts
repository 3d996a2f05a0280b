// How a linear layer (y = x W^T + b) becomes ONNX nodes. Export emits float MatMul; passes such as
// quantization supply another LinearEmitter, so one graph builder serves every precision.
import { Elem, type GraphBuilder } from '../formats/onnx/graph.js';
import { transpose2d, type WeightSource } from '../core/weights.js';

export interface LinearLayer {
  /** Node path prefix, e.g. `/model/layers.0/attn/q_proj`. */
  path: string;
  /** Hugging Face module name, e.g. `model.layers.0.self_attn.q_proj` (weight is `<name>.weight`). */
  module: string;
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
}

export type LinearEmitter = (g: GraphBuilder, weights: WeightSource, layer: LinearLayer, x: string) => Promise<string>;

function f32bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Adds the bias (if any) after a projection. */
export async function addBias(g: GraphBuilder, weights: WeightSource, layer: LinearLayer, y: string): Promise<string> {
  if (!layer.bias) return y;
  const b = g.initializer(
    `${layer.module}.bias`,
    Elem.FLOAT,
    [layer.outFeatures],
    f32bytes(await weights.readFloat32(`${layer.module}.bias`)),
  );
  return g.op('Add', [y, b], `${layer.path}/BiasAdd`);
}

/** float32 MatMul against the transposed weight [in, out]. */
export const floatLinear: LinearEmitter = async (g, weights, layer, x) => {
  const w = await weights.readFloat32(`${layer.module}.weight`);
  const wT = transpose2d(w, layer.outFeatures, layer.inFeatures);
  const name = g.initializer(`${layer.module}.weight`, Elem.FLOAT, [layer.inFeatures, layer.outFeatures], f32bytes(wT));
  const y = g.op('MatMul', [x, name], `${layer.path}/MatMul`);
  return addBias(g, weights, layer, y);
};

export { f32bytes };
