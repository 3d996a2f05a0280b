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

/**
 * Several linear layers on the same input (q/k/v, gate/up) as one product over their rows concatenated, split
 * apart after: one kernel call instead of two or three, which at batch 1 saves their per-call overhead. Returns
 * the layers' outputs in order. `path` names the shared nodes. Emitters that cannot pack a group (layers of
 * different precision) emit the layers one by one.
 */
export type PackedLinearEmitter = (
  g: GraphBuilder,
  weights: WeightSource,
  layers: LinearLayer[],
  x: string,
  path: string,
) => Promise<string[]>;

/** One linear layer's nodes; `packed`, where the emitter has one, is used for groups on the same input. */
export type LinearEmitter = ((g: GraphBuilder, weights: WeightSource, layer: LinearLayer, x: string) => Promise<string>) & {
  packed?: PackedLinearEmitter;
};

function f32bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Writes a layer's bias [out] as its initializer `<module>.bias`. */
async function biasInitializer(g: GraphBuilder, weights: WeightSource, layer: LinearLayer): Promise<string> {
  const b = await weights.readFloat32(`${layer.module}.bias`);
  return g.initializer(`${layer.module}.bias`, Elem.FLOAT, [layer.outFeatures], f32bytes(b));
}

/** Adds the bias (if any) after a projection. */
export async function addBias(g: GraphBuilder, weights: WeightSource, layer: LinearLayer, y: string): Promise<string> {
  if (!layer.bias) return y;
  return g.op('Add', [y, await biasInitializer(g, weights, layer)], `${layer.path}/BiasAdd`);
}

/**
 * Concatenates initializers along `axis` in the graph. Each keeps its own name and bytes in the file (inspect,
 * the manifest and the tests read them per module); onnxruntime folds the Concat into one constant when it
 * loads the graph, so the kernel sees (and prepacks) a single weight.
 */
export function concatConstants(g: GraphBuilder, names: string[], axis: number, path: string): string {
  return g.op('Concat', names, path, { axis: { int: axis } });
}

/**
 * The packed layers' biases added to their packed output (all or none of them have one; see canPack), then the
 * output split into the layers' own [..., out] outputs.
 */
export async function splitPacked(
  g: GraphBuilder,
  weights: WeightSource,
  layers: LinearLayer[],
  y: string,
  path: string,
): Promise<string[]> {
  if (layers[0]!.bias) {
    const biases = [];
    for (const layer of layers) biases.push(await biasInitializer(g, weights, layer));
    y = g.op('Add', [y, concatConstants(g, biases, 0, `${path}/Bias/Concat`)], `${path}/BiasAdd`);
  }
  const outs = layers.map((l) => l.outFeatures);
  const sizes = g.constant(`/const/split_${outs.join('_')}`, Elem.INT64, [outs.length], outs);
  return g.node('Split', [y, sizes], { name: `${path}/Split`, outputs: layers.length, attrs: { axis: { int: -1 } } });
}

/** Whether layers can share one product: the same input width, and a bias on all of them or on none. */
export const canPack = (layers: LinearLayer[]): boolean =>
  layers.length > 1 && layers.every((l) => l.inFeatures === layers[0]!.inFeatures && l.bias === layers[0]!.bias);

/** Emits each layer on its own (the fallback of a packed emitter). */
export async function eachLinear(g: GraphBuilder, weights: WeightSource, emit: LinearEmitter, layers: LinearLayer[], x: string) {
  const outs: string[] = [];
  for (const layer of layers) outs.push(await emit(g, weights, layer, x));
  return outs;
}

/** A float weight stored transposed, [in, out], as MatMul reads it. */
async function transposedWeight(g: GraphBuilder, weights: WeightSource, layer: LinearLayer): Promise<string> {
  const w = await weights.readFloat32(`${layer.module}.weight`);
  const wT = transpose2d(w, layer.outFeatures, layer.inFeatures);
  return g.initializer(`${layer.module}.weight`, Elem.FLOAT, [layer.inFeatures, layer.outFeatures], f32bytes(wT));
}

/** float32 MatMul against the transposed weight [in, out]; packed: the weights concatenated along their columns. */
export const floatLinear: LinearEmitter = Object.assign(
  async (g: GraphBuilder, weights: WeightSource, layer: LinearLayer, x: string) => {
    const y = g.op('MatMul', [x, await transposedWeight(g, weights, layer)], `${layer.path}/MatMul`);
    return addBias(g, weights, layer, y);
  },
  {
    packed: (async (g, weights, layers, x, path) => {
      if (!canPack(layers)) return eachLinear(g, weights, floatLinear, layers, x);
      const names = [];
      for (const layer of layers) names.push(await transposedWeight(g, weights, layer));
      const y = g.op('MatMul', [x, concatConstants(g, names, 1, `${path}/Weight/Concat`)], `${path}/MatMul`);
      return splitPacked(g, weights, layers, y, path);
    }) satisfies PackedLinearEmitter,
  },
);

export { f32bytes };
