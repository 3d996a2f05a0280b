// A small typed layer over onnx-proto for building graphs: path-named nodes, constants shared by
// name, and initializers streamed to an external data file as they are added (never held in memory).
import onnxProto from 'onnx-proto';
import type { ExternalDataWriter } from './external-data.js';

export const { onnx } = onnxProto;

/** ONNX tensor element types llmopt emits (TensorProto.DataType numbers). */
export const Elem = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  BFLOAT16: 16,
  UINT4: 21,
  INT4: 22,
} as const;
export type ElemType = (typeof Elem)[keyof typeof Elem];

/** A dimension: a fixed size or a symbolic name such as "batch_size". */
export type Dim = number | string;

/** Typed attribute values: ONNX distinguishes ints from floats, so the caller says which. */
export type Attr =
  | { int: number }
  | { float: number }
  | { ints: number[] }
  | { floats: number[] }
  | { string: string }
  | { tensor: onnxProto.onnx.ITensorProto };

export interface NodeOptions {
  /** Path-like node name (`/model/layers.0/attn/q_proj/MatMul`); outputs are named after it. */
  name: string;
  /** Output names, or how many outputs to name `<name>/output_<i>` (default 1). */
  outputs?: number | string[];
  attrs?: Record<string, Attr>;
  domain?: string;
}

export const MS_DOMAIN = 'com.microsoft';

function valueInfo(name: string, elem: ElemType, dims: Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: elem,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, a: Attr): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if ('int' in a) return { name, type: T.INT, i: a.int };
  if ('float' in a) return { name, type: T.FLOAT, f: a.float };
  if ('ints' in a) return { name, type: T.INTS, ints: a.ints };
  if ('floats' in a) return { name, type: T.FLOATS, floats: a.floats };
  if ('string' in a) return { name, type: T.STRING, s: new TextEncoder().encode(a.string) };
  return { name, type: T.TENSOR, t: a.tensor };
}

/** An in-line tensor for small constants (shapes, axes, scalars). */
export function constTensor(
  name: string,
  elem: ElemType,
  dims: number[],
  values: ArrayLike<number> | bigint[],
): onnxProto.onnx.ITensorProto {
  const t: onnxProto.onnx.ITensorProto = { name, dataType: elem, dims };
  if (elem === Elem.FLOAT) t.rawData = new Uint8Array(Float32Array.from(values as ArrayLike<number>).buffer);
  else if (elem === Elem.INT64)
    t.rawData = new Uint8Array(BigInt64Array.from(Array.from(values as ArrayLike<number>, (v) => BigInt(v))).buffer);
  else if (elem === Elem.INT32) t.rawData = new Uint8Array(Int32Array.from(values as ArrayLike<number>).buffer);
  else if (elem === Elem.BOOL || elem === Elem.UINT8) t.rawData = Uint8Array.from(values as ArrayLike<number>);
  else throw new Error(`constTensor: element type ${elem} not supported`);
  return t;
}

/** Builds one GraphProto; weights go to `data` as they are added. */
export class GraphBuilder {
  readonly nodes: onnxProto.onnx.INodeProto[] = [];
  readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly names = new Set<string>();
  private readonly constants = new Map<string, string>();
  private readonly domains = new Set<string>();

  constructor(readonly data: ExternalDataWriter | null) {}

  input(name: string, elem: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, elem, dims));
    return name;
  }

  output(name: string, elem: ElemType, dims: Dim[]): string {
    this.outputs.push(valueInfo(name, elem, dims));
    return name;
  }

  /** Adds a node and returns its output names. */
  node(op: string, inputs: string[], opts: NodeOptions): string[] {
    if (this.names.has(opts.name)) throw new Error(`duplicate node name ${opts.name}`);
    this.names.add(opts.name);
    const outputs =
      typeof opts.outputs === 'object' ? opts.outputs : Array.from({ length: opts.outputs ?? 1 }, (_, i) => `${opts.name}/output_${i}`);
    const node: onnxProto.onnx.INodeProto = { opType: op, name: opts.name, input: inputs, output: outputs };
    if (opts.domain) {
      node.domain = opts.domain;
      this.domains.add(opts.domain);
    }
    if (opts.attrs) node.attribute = Object.entries(opts.attrs).map(([k, v]) => attribute(k, v));
    this.nodes.push(node);
    return outputs;
  }

  /** Single-output shorthand for `node`. */
  op(op: string, inputs: string[], name: string, attrs?: Record<string, Attr>, domain?: string): string {
    return this.node(op, inputs, { name, attrs, domain })[0]!;
  }

  /** A small in-line constant, shared by name: asking twice for the same name returns the first. */
  constant(name: string, elem: ElemType, dims: number[], values: ArrayLike<number>): string {
    const existing = this.constants.get(name);
    if (existing) return existing;
    this.initializers.push(constTensor(name, elem, dims, values));
    this.constants.set(name, name);
    return name;
  }

  /** A weight: its bytes go straight to the external data file (or in-line when there is none). */
  initializer(name: string, elem: ElemType, dims: number[], bytes: Uint8Array): string {
    if (this.data && bytes.byteLength >= 1024) {
      const { offset, length } = this.data.append(bytes);
      this.initializers.push({
        name,
        dataType: elem,
        dims,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: this.data.location },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(length) },
        ],
      });
    } else {
      this.initializers.push({ name, dataType: elem, dims, rawData: bytes.slice() });
    }
    return name;
  }

  usedDomains(): string[] {
    return [...this.domains];
  }

  toGraph(name: string): onnxProto.onnx.IGraphProto {
    return { name, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs };
  }
}

export interface ModelOptions {
  opset: number;
  producerVersion: string;
  metadata?: Record<string, string>;
}

/** Wraps a graph into a serialized ModelProto. */
export function encodeModel(graph: GraphBuilder, graphName: string, opts: ModelOptions): Uint8Array {
  const opsetImport: onnxProto.onnx.IOperatorSetIdProto[] = [{ domain: '', version: opts.opset }];
  for (const d of graph.usedDomains()) if (d !== '' && d !== 'ai.onnx') opsetImport.push({ domain: d, version: 1 });
  const model: onnxProto.onnx.IModelProto = {
    // IR 8 pairs with opsets up to 18; newer opsets need a newer IR version.
    irVersion: opts.opset <= 18 ? 8 : opts.opset <= 20 ? 9 : 10,
    opsetImport,
    producerName: 'llmopt',
    producerVersion: opts.producerVersion,
    graph: graph.toGraph(graphName),
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
  };
  return onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
}

/** Decodes a model.onnx (without loading external data). */
export function decodeModel(bytes: Uint8Array): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}
