// Reverse-mode differentiation of an ONNX graph built with GraphBuilder: for every op the decoder's
// training forward uses, a vector-Jacobian product emitted as ONNX nodes, so onnxruntime runs the
// backward pass with the same kernels (and providers) as the forward. Shapes are handled at run time
// (broadcast gradients are summed back to each input's shape), so no static shape inference is needed.
import type onnxProto from 'onnx-proto';
import { Elem, MS_DOMAIN, type GraphBuilder } from '../../formats/onnx/graph.js';

type Node = onnxProto.onnx.INodeProto;

/** Which inputs of an op carry gradient (others are indices, shapes, masks or constants). */
const DIFFERENTIABLE: Record<string, number[]> = {
  Add: [0, 1],
  Sub: [0, 1],
  Mul: [0, 1],
  Div: [0, 1],
  MatMul: [0, 1],
  Gemm: [0, 1],
  Where: [1, 2],
  Gather: [0],
  Reshape: [0],
  Unsqueeze: [0],
  Squeeze: [0],
  Transpose: [0],
  Split: [0],
  Concat: [],
  Identity: [0],
  Sqrt: [0],
  Reciprocal: [0],
  Sigmoid: [0],
  Tanh: [0],
  Softmax: [0],
  ReduceMean: [0],
  ReduceSum: [0],
  Neg: [0],
};

function attr(node: Node, name: string): onnxProto.onnx.IAttributeProto | undefined {
  return node.attribute?.find((a) => a.name === name);
}
const attrInt = (node: Node, name: string, fallback: number) => Number(attr(node, name)?.i ?? fallback);
const attrInts = (node: Node, name: string) => (attr(node, name)?.ints ?? []).map(Number);

/**
 * Adds the backward pass to `g`. `seeds` maps forward tensors to their given gradients (dLoss/dlogits);
 * returns the gradient tensor of each name in `wrt` (graph inputs: the trainable weights).
 */
export function addGradients(g: GraphBuilder, seeds: Map<string, string>, wrt: readonly string[]): Map<string, string> {
  const forward = [...g.nodes];
  const needs = new Set(wrt);
  for (const n of forward) {
    const diff = n.opType === 'Concat' ? (n.input ?? []).map((_, i) => i) : (DIFFERENTIABLE[n.opType!] ?? []);
    if (diff.some((i) => needs.has(n.input![i]!))) for (const o of n.output ?? []) if (o) needs.add(o);
  }
  const contributions = new Map<string, string[]>();
  for (const [t, grad] of seeds) contributions.set(t, [grad]);
  let counter = 0;
  const name = (hint: string) => `/grad/${hint}_${counter++}`;
  const op = (type: string, inputs: string[], hint: string, attrs?: Parameters<GraphBuilder['op']>[3], domain?: string) =>
    g.op(type, inputs, name(`${hint}/${type}`), attrs, domain);
  const i64 = (v: number[]) => g.constant(`/grad/const/i64_${v.join('_')}`, Elem.INT64, [v.length], v);
  const zero = g.constant('/grad/const/zero', Elem.FLOAT, [], [0]);

  const add = (t: string, grad: string) => {
    if (!needs.has(t)) return;
    const list = contributions.get(t) ?? [];
    list.push(grad);
    contributions.set(t, list);
  };
  const gradOf = (t: string): string | null => {
    const list = contributions.get(t);
    if (!list?.length) return null;
    if (list.length === 1) return list[0]!;
    const sum = op('Sum', list, 'accumulate');
    contributions.set(t, [sum]);
    return sum;
  };

  /** Sums a broadcast gradient back to the shape of `x` (leading axes, then axes where x has size 1). */
  const unbroadcast = (grad: string, x: string, hint: string): string => {
    const xs = op('Shape', [x], hint);
    const gs = op('Shape', [grad], hint);
    const extra = op('Sub', [op('Size', [gs], hint), op('Size', [xs], hint)], hint);
    const lead = op(
      'Range',
      [g.constant('/grad/const/i64_0', Elem.INT64, [], [0]), extra, g.constant('/grad/const/i64_1', Elem.INT64, [], [1])],
      hint,
    );
    const summed = op('ReduceSum', [grad, lead], hint, { keepdims: { int: 0 }, noop_with_empty_axes: { int: 1 } });
    const ss = op('Shape', [summed], hint);
    const one = i64([1]);
    const ones = op('And', [op('Equal', [xs, one], hint), op('Not', [op('Equal', [ss, one], hint)], hint)], hint);
    const axes = op('Reshape', [op('NonZero', [ones], hint), i64([-1])], hint);
    const reduced = op('ReduceSum', [summed, axes], hint, { keepdims: { int: 1 }, noop_with_empty_axes: { int: 1 } });
    return op('Reshape', [reduced, xs], hint);
  };

  for (let k = forward.length - 1; k >= 0; k--) {
    const n = forward[k]!;
    const outs = n.output ?? [];
    if (!outs.some((o) => o && needs.has(o))) continue;
    const dys = outs.map((o) => (o ? gradOf(o) : null));
    if (dys.every((d) => d === null)) continue;
    const [a, b] = [n.input![0]!, n.input![1]!];
    const dy = dys[0]!;
    const y = outs[0]!;
    const h = n.name ?? n.opType!;
    switch (n.opType) {
      case 'Identity':
        add(a, dy);
        break;
      case 'Add':
        add(a, unbroadcast(dy, a, h));
        add(b, unbroadcast(dy, b, h));
        break;
      case 'Sub':
        add(a, unbroadcast(dy, a, h));
        if (needs.has(b)) add(b, op('Neg', [unbroadcast(dy, b, h)], h));
        break;
      case 'Mul':
        if (needs.has(a)) add(a, unbroadcast(op('Mul', [dy, b], h), a, h));
        if (needs.has(b)) add(b, unbroadcast(op('Mul', [dy, a], h), b, h));
        break;
      case 'Div':
        if (needs.has(a)) add(a, unbroadcast(op('Div', [dy, b], h), a, h));
        if (needs.has(b)) add(b, unbroadcast(op('Neg', [op('Div', [op('Mul', [dy, y], h), b], h)], h), b, h));
        break;
      case 'Neg':
        add(a, op('Neg', [dy], h));
        break;
      case 'Sqrt': // d sqrt(x) = 1 / (2 sqrt(x))
        add(a, op('Div', [dy, op('Add', [y, y], h)], h));
        break;
      case 'Reciprocal': // d (1/x) = -1/x^2
        add(a, op('Neg', [op('Mul', [dy, op('Mul', [y, y], h)], h)], h));
        break;
      case 'Sigmoid': // s (1 - s)
        add(a, op('Mul', [dy, op('Sub', [y, op('Mul', [y, y], h)], h)], h));
        break;
      case 'Tanh': // 1 - t^2 (tanh-GELU, soft-capping)
        add(a, op('Sub', [dy, op('Mul', [dy, op('Mul', [y, y], h)], h)], h));
        break;
      case 'Softmax': {
        const axis = attrInt(n, 'axis', -1);
        const dot = op('ReduceSum', [op('Mul', [dy, y], h), i64([axis])], h, { keepdims: { int: 1 } });
        add(a, op('Mul', [y, op('Sub', [dy, dot], h)], h));
        break;
      }
      case 'ReduceMean':
      case 'ReduceSum': {
        // Only keepdims=1 reductions occur in the decoder; the gradient spreads back over the reduced axes.
        if (attrInt(n, 'keepdims', 1) !== 1) throw new Error(`autodiff: ${n.opType} with keepdims=0 (${h})`);
        const spread = op('Expand', [dy, op('Shape', [a], h)], h);
        if (n.opType === 'ReduceSum') add(a, spread);
        else {
          const count = op('Cast', [op('Div', [op('Size', [a], h), op('Size', [y], h)], h)], h, { to: { int: Elem.FLOAT } });
          add(a, op('Div', [spread, count], h));
        }
        break;
      }
      case 'MatMul': // Y = A B (batched, broadcasting): dA = dY B^T, dB = A^T dY, summed back over broadcast axes
        if (needs.has(a)) add(a, unbroadcast(op('FusedMatMul', [dy, b], h, { transB: { int: 1 } }, MS_DOMAIN), a, h));
        if (needs.has(b)) add(b, unbroadcast(op('FusedMatMul', [a, dy], h, { transA: { int: 1 } }, MS_DOMAIN), b, h));
        break;
      case 'Gemm': {
        // 2-D Y = A op(B) with transB = 1 (the tied lm_head): dA = dY B, dB = dY^T A.
        if (attrInt(n, 'transA', 0) !== 0 || attrInt(n, 'transB', 0) !== 1 || (n.input?.length ?? 0) > 2)
          throw new Error(`autodiff: Gemm form not supported (${h})`);
        if (needs.has(a)) add(a, op('MatMul', [dy, b], h));
        if (needs.has(b)) add(b, op('FusedMatMul', [dy, a], h, { transA: { int: 1 } }, MS_DOMAIN));
        break;
      }
      case 'Transpose': {
        const perm = attrInts(n, 'perm');
        const inverse = perm.map((_, i) => perm.indexOf(i));
        add(a, op('Transpose', [dy], h, { perm: { ints: inverse } }));
        break;
      }
      case 'Reshape':
      case 'Unsqueeze':
      case 'Squeeze':
        add(a, op('Reshape', [dy, op('Shape', [a], h)], h));
        break;
      case 'Where': {
        const cond = n.input![0]!;
        if (needs.has(b)) add(b, unbroadcast(op('Where', [cond, dy, zero], h), b, h));
        const c = n.input![2]!;
        if (needs.has(c)) add(c, unbroadcast(op('Where', [cond, zero, dy], h), c, h));
        break;
      }
      case 'Gather': {
        // Embedding rows: scatter-add the rows' gradients back into a zero table.
        if (attrInt(n, 'axis', 0) !== 0) throw new Error(`autodiff: Gather on axis != 0 (${h})`);
        const zeros = op('ConstantOfShape', [op('Shape', [a], h)], h, {
          value: { tensor: { dataType: Elem.FLOAT, dims: [1], rawData: new Uint8Array(4) } },
        });
        const idx = op('Unsqueeze', [b, i64([-1])], h);
        add(a, op('ScatterND', [zeros, idx, dy], h, { reduction: { string: 'add' } }));
        break;
      }
      case 'Split': {
        const axis = attrInt(n, 'axis', 0);
        const parts = outs.map(
          (o, i) =>
            dys[i] ??
            op('ConstantOfShape', [op('Shape', [o!], h)], h, {
              value: { tensor: { dataType: Elem.FLOAT, dims: [1], rawData: new Uint8Array(4) } },
            }),
        );
        add(a, op('Concat', parts, h, { axis: { int: axis } }));
        break;
      }
      case 'Concat': {
        const axis = attrInt(n, 'axis', 0);
        const ins = n.input!;
        const sizes = op(
          'Concat',
          ins
            .map((x) =>
              op('Gather', [op('Shape', [x], h), g.constant(`/grad/const/scalar_${axis}`, Elem.INT64, [], [axis])], h, {
                axis: { int: 0 },
              }),
            )
            .map((s) => op('Unsqueeze', [s, i64([0])], h)),
          h,
          { axis: { int: 0 } },
        );
        const pieces = g.node('Split', [dy, sizes], { name: name(`${h}/Split`), outputs: ins.length, attrs: { axis: { int: axis } } });
        ins.forEach((x, i) => add(x, pieces[i]!));
        break;
      }
      default:
        throw new Error(`autodiff: no gradient rule for ${n.opType} (${h})`);
    }
  }
  const grads = new Map<string, string>();
  for (const w of wrt) {
    const grad = gradOf(w);
    grads.set(
      w,
      grad ??
        op('ConstantOfShape', [op('Shape', [w], 'unused')], 'unused', {
          value: { tensor: { dataType: Elem.FLOAT, dims: [1], rawData: new Uint8Array(4) } },
        }),
    );
  }
  return grads;
}
