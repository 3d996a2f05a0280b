// The decoder graph's attention masks, built once per graph: which key slots each query may see (causal and
// padding), and that narrowed to a sliding window.
import { Elem, type GraphBuilder } from '../formats/onnx/graph.js';
import { io } from '../core/io.js';

/**
 * [B,1,1,S,T] bool over the slots of `mask` [B, T] (a cache's and then the step's S tokens): query s sits at slot
 * P + s (P = T - S); it may see slot t when t <= P + s and mask[t] = 1.
 */
export function slotMask(g: GraphBuilder, mask: string, tokens: string, p: string): { allowed: string; P: string; T: string } {
  const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
  const scalar = (name: string, v: number) => g.constant(name, Elem.INT64, [], [v]);
  const T = g.op('Gather', [g.op('Shape', [mask], `${p}/Shape_T`), scalar('/const/one_i64', 1)], `${p}/T`, {
    axis: { int: 0 },
  });
  const S = g.op('Gather', [g.op('Shape', [tokens], `${p}/Shape_S`), scalar('/const/one_i64', 1)], `${p}/S`, { axis: { int: 0 } });
  const P = g.op('Sub', [T, S], `${p}/P`);
  const one = scalar('/const/one_i64', 1);
  const qSlots = g.op('Range', [P, T, one], `${p}/q_slots`); // [S]
  const kSlots = g.op('Range', [scalar('/const/zero_i64', 0), T, one], `${p}/k_slots`); // [T]
  const causal = g.op(
    'LessOrEqual',
    [
      g.op('Unsqueeze', [kSlots, i64('/const/axes_0', [0])], `${p}/k_row`),
      g.op('Unsqueeze', [qSlots, i64('/const/axes_1', [1])], `${p}/q_col`),
    ],
    `${p}/causal`,
  ); // [S, T]
  const valid = g.op('Cast', [mask], `${p}/valid`, { to: { int: Elem.BOOL } });
  const valid5 = g.op('Unsqueeze', [valid, i64('/const/axes_1_2_3', [1, 2, 3])], `${p}/valid5`); // [B,1,1,1,T]
  return { allowed: g.op('And', [causal, valid5], `${p}/allowed`), P, T }; // [B,1,1,S,T]
}

/**
 * `allowed` [B,1,1,S,T] narrowed to a sliding window: query at position p sees keys at positions in (p - window, p].
 * Positions, not slots: a slot's position is the count of valid slots before it (the standard cache keeps
 * padding holes between a row's tokens), for the queries (slots P..T-1) as for the keys. Not position_ids: their
 * origin is the client's (transformers.js numbers Gemma 3's from 1, as PaliGemma's are), which shifts the rotary
 * harmlessly but would narrow the window by one.
 */
export function windowMask(
  g: GraphBuilder,

  allowed: string,
  window: number,
  P: string,
  T: string,
  mask: string = io.attentionMask,
  p = '/model/attn_mask/window',
): string {
  const i64 = (name: string, v: number[]) => g.constant(name, Elem.INT64, [v.length], v);
  const one = g.constant('/const/one_i64', Elem.INT64, [], [1]);
  const counts = g.op('CumSum', [mask, one], `${p}/CumSum`); // [B,T]
  const pos = g.op('Sub', [counts, one], `${p}/slot_pos`); // [B,T]
  const kPos = g.op('Unsqueeze', [pos, i64('/const/axes_1_2_3', [1, 2, 3])], `${p}/k_pos5`); // [B,1,1,1,T]
  const axes0 = i64('/const/axes_0', [0]);
  const from = g.op('Unsqueeze', [P, axes0], `${p}/q_from`);
  const to = g.op('Unsqueeze', [T, axes0], `${p}/q_to`);
  const qSlots = g.op('Slice', [pos, from, to, i64('/const/axes_1', [1])], `${p}/q_pos`); // [B,S]
  const qPos = g.op('Unsqueeze', [qSlots, i64('/const/axes_1_2_4', [1, 2, 4])], `${p}/q_pos5`); // [B,1,1,S,1]
  const dist = g.op('Sub', [qPos, kPos], `${p}/Distance`); // [B,1,1,S,T]
  const w = g.constant(`/const/window_${window}_i64`, Elem.INT64, [], [window]);
  return g.op('And', [allowed, g.op('Less', [dist, w], `${p}/InWindow`)], `${p}/allowed`);
}
