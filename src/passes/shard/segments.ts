// The graphs one rank runs, in order: a pipeline stage without tensor parallelism is one graph over
// its layers; with tensor parallelism every attention and MLP block is its own graph, because the
// runtime sums the ranks' partial outputs between them.
import { io } from '../../core/io.js';
import type { SegmentRecord } from '../../runtime/sharded/manifest.js';
import type { RankPlan, ShardPlan } from './plan.js';
import { layerTensorNames, type DecoderSpec } from '../../core/spec.js';

/**
 * The segments of rank `r`. With sandwich norms (Gemma) and tensor parallelism, a block's output can only be normed once
 * the ranks' shares are summed: each segment after a block takes that sum and applies the block's post norm first.
 */
export function rankSegments(plan: ShardPlan, r: RankPlan, spec: DecoderSpec): SegmentRecord[] {
  const past = (from: number, to: number) =>
    Array.from({ length: to - from }, (_, k) => [io.pastKey(from + k), io.pastValue(from + k)]).flat();
  const file = (id: string) => `${id}.onnx`;
  const { from, to } = r.layers;
  if (plan.tp === 1) {
    const id = `layers.${from}-${to - 1}`;
    const input = r.embedding ? io.inputIds : io.hiddenStates;
    return [{ id, file: file(id), input, layers: { from, to }, head: r.head, pastNames: past(from, to) }];
  }
  const split = plan.vocab === 'split';
  const segments: SegmentRecord[] = [];
  const vocab = split ? { vocabOffset: r.vocab.from } : {};
  if (r.embedding) segments.push({ id: 'embed', file: file('embed'), input: io.inputIds, head: false, pastNames: [], ...vocab });
  // The post norm of the block before (layer i's attention, or layer i-1's MLP), none before layer 0.
  const pending = (i: number, half: 'attn' | 'mlp') => {
    if (!spec.sandwichNorms || (half === 'attn' && i === 0)) return {};
    const n = half === 'attn' ? layerTensorNames(i - 1).postFeedforwardNorm : layerTensorNames(i).postAttentionNorm;
    return { pendingNorm: n };
  };
  for (let i = from; i < to; i++) {
    const block = (half: 'attn' | 'mlp', pastNames: string[]): SegmentRecord => {
      const id = `layers.${i}.${half}`;
      return { id, file: file(id), input: io.hiddenStates, half: { layer: i, block: half }, head: false, pastNames, ...pending(i, half) };
    };
    segments.push(block('attn', past(i, i + 1)), block('mlp', []));
  }
  if (r.head) {
    segments.push({
      id: 'head',
      file: file('head'),
      input: io.hiddenStates,
      head: true,
      pastNames: [],
      ...pending(spec.numLayers, 'attn'),
    });
  }
  return segments;
}
