// shard: Hugging Face checkpoint -> tensor- and pipeline-parallel ranks. Either per-rank ONNX graphs
// with a manifest that llmopt's sharded runtime runs, or a TensorRT-LLM checkpoint. Written atomically.
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { InputError } from '../../core/errors.js';
import type { OptionValues } from '../options.js';
import type { SHARD_OPTIONS } from './definition.js';
import { GraphBuilder, encodeModel } from '../../formats/onnx/graph.js';
import { ExternalDataWriter } from '../../formats/onnx/external-data.js';
import { assertGraphValid } from '../../formats/onnx/check.js';
import { TOOL_VERSION, isArtifact } from '../../formats/artifact.js';
import { passRecord } from '../../formats/manifest.js';
import { writeModelFolder } from '../../formats/model-folder.js';
import {
  tensorRtLlmRankTensors,
  tensorRtLlmStages,
  tensorRtLlmUnsupported,
  writeTensorRtLlmCheckpoint,
  type TensorRtLlmRank,
} from '../../formats/tensorrt-llm.js';
import { openHfModel } from '../../model/checkpoint.js';
import { buildSegmentGraph } from '../../model/decoder.js';
import { ATTENTION, SHARDABLE_FORMS } from '../../core/io.js';
import { EMBED_TOKENS, expectedTensors, type DecoderSpec } from '../../core/spec.js';
import { RANK_FILE, sha256File, type RankRecord, type ShardManifest } from '../../runtime/sharded/manifest.js';
import { planShard, rankSpec, type RankPlan, type ShardPlan, type VocabMode } from './plan.js';
import { rankSegments } from './segments.js';
import { rankWeights } from './slice.js';

/** The rank graphs' KV caches are kept per rank in past/present form (see the forms' traits in core/io.ts). */
export const SHARD_ATTENTION_FORMS = SHARDABLE_FORMS;
export const SHARD_FORMATS = ['onnx', 'tensorrt-llm'] as const;
export type ShardFormat = (typeof SHARD_FORMATS)[number];

/** The pass's options: the declared ones (shard/definition.ts). */
export type ShardOptions = Omit<OptionValues<typeof SHARD_OPTIONS>, 'output' | 'json' | 'quiet'> & {
  /** Progress: (tensors written, tensors in all). */
  onProgress?: (done: number, total: number) => void;
};

export interface ShardReport {
  output: string;
  format: ShardFormat;
  tp: number;
  pp: number;
  worldSize: number;
  stages: Array<[number, number]>;
  kvHeads: 'split' | 'replicated';
  vocab: VocabMode;
  ranks: Array<{ rank: number; stage: number; tpRank: number; layers: [number, number]; bytes: number }>;
  /** Largest rank's bytes over the mean: 1 is perfect balance. */
  balance: number;
  seconds: number;
}

/** Tensors (Hugging Face names, full shapes) a rank holds. */
export function rankTensorNames(spec: DecoderSpec, r: RankPlan): string[] {
  const names: string[] = [];
  for (const name of expectedTensors(spec).keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (m) {
      const i = Number(m[1]);
      if (i >= r.layers.from && i < r.layers.to) names.push(name);
    } else if (name === EMBED_TOKENS) {
      if (r.embedding || (r.head && spec.tiedEmbeddings)) names.push(name);
    } else if (r.head) names.push(name);
  }
  return names;
}

const pair = (r: { from: number; to: number }): [number, number] => [r.from, r.to];

async function writeOnnxRank(
  tmp: string,
  spec: DecoderSpec,
  weights: Parameters<typeof rankWeights>[0],
  plan: ShardPlan,
  r: RankPlan,
  runId: string,
  opts: ShardOptions,
  tick: () => void,
): Promise<RankRecord> {
  const dir = `rank${r.rank}`;
  const rankDir = join(tmp, dir);
  mkdirSync(rankDir);
  const local = rankSpec(spec, r);
  const sliced = rankWeights(weights, spec, r);
  const segments = rankSegments(plan, r, spec);
  for (const seg of segments) {
    const dataName = `${seg.file}.data`;
    const data = new ExternalDataWriter(join(rankDir, dataName), dataName);
    const g = new GraphBuilder(data);
    try {
      // The rank workers trim sliding layers' caches to their window (runtime/sharded/worker.ts).
      await buildSegmentGraph(g, local, sliced, seg, { attention: opts.attention, windowedCache: true, onTensor: tick });
    } finally {
      data.close();
    }
    const bytes = encodeModel(g, `llmopt_rank${r.rank}_${seg.id}`, { opset: 17, producerVersion: TOOL_VERSION });
    assertGraphValid(bytes);
    writeFileSync(join(rankDir, seg.file), bytes);
  }
  writeFileSync(join(rankDir, RANK_FILE), `${JSON.stringify({ runId, rank: r.rank })}\n`);
  const files: RankRecord['files'] = {};
  for (const f of readdirSync(rankDir).sort())
    files[f] = { bytes: statSync(join(rankDir, f)).size, sha256: await sha256File(join(rankDir, f)) };
  const tensors: Record<string, number[]> = {};
  for (const name of rankTensorNames(spec, r)) tensors[name] = sliced.shape(name);
  return {
    rank: r.rank,
    stage: r.stage,
    tpRank: r.tpRank,
    dir,
    layers: pair(r.layers),
    heads: pair(r.heads),
    kvHeads: pair(r.kvHeads),
    ffn: pair(r.ffn),
    vocab: pair(r.vocab),
    segments,
    tensors,
    files,
  };
}

/** Shards `source` into `output`; validates everything before writing anything. */
export async function shardModel(source: string, output: string, opts: ShardOptions): Promise<ShardReport> {
  const started = Date.now();
  if (isArtifact(source))
    throw new InputError(
      `${source}: is an ONNX artifact; shard takes a float Hugging Face checkpoint ` +
        `(quantized artifacts cannot be sharded: shard first, quantize is not supported on shards yet)`,
    );
  const model = await openHfModel(source);
  const { spec } = model;
  try {
    if (model.gguf) throw new InputError(`${model.gguf}: shard reads Hugging Face folders, not GGUF files (export and quantize read GGUF)`);
    if (model.quantization)
      throw new InputError(
        `${source}: is already quantized (${model.quantization}); shard takes a float checkpoint (quantized inputs are not supported)`,
      );
    if (opts.format === 'tensorrt-llm' && opts.stages !== undefined)
      throw new InputError(
        '--stages does not apply to --format tensorrt-llm: TensorRT-LLM assigns layers to stages itself (mapping.pp_layers)',
      );
    const unsupported = opts.format === 'tensorrt-llm' ? tensorRtLlmUnsupported(spec, opts.tp, opts.pp) : null;
    if (unsupported) throw new InputError(`${source}: --format tensorrt-llm ${unsupported}; use --format onnx`);
    // The attention form is the ONNX graphs' alone: a TensorRT-LLM checkpoint holds weights, and its engine builds attention.
    if (opts.format !== 'tensorrt-llm' && !ATTENTION[opts.attention].shardable) {
      throw new InputError(`--attention ${opts.attention}: sharded models are built with ${SHARD_ATTENTION_FORMS.join(' or ')} attention`);
    }
    const plan = planShard(spec, {
      tp: opts.tp,
      pp: opts.pp,
      stages: opts.format === 'tensorrt-llm' ? undefined : opts.stages,
      vocab: opts.vocab,
    });
    if (opts.format === 'tensorrt-llm') {
      const stages = tensorRtLlmStages(spec.numLayers, plan.pp);
      plan.stages = stages;
      for (const r of plan.ranks) r.layers = stages[r.stage]!;
    }
    const configBytes = readFileSync(join(source, 'config.json'));
    const trtRanks: TensorRtLlmRank[] = plan.ranks.map((r) => ({
      rank: r.rank,
      tpRank: r.tpRank,
      layers: r.layers,
      first: r.embedding,
      last: r.head,
      weights: rankWeights(model.weights, spec, r, 'every'),
    }));
    const total =
      opts.format === 'tensorrt-llm'
        ? trtRanks.reduce((a, r) => a + tensorRtLlmRankTensors(spec, plan.tp, r).length, 0)
        : plan.ranks.reduce((a, r) => a + rankTensorNames(spec, r).length, 0);
    let done = 0;
    const tick = () => opts.onProgress?.(++done, total);
    const trt = opts.format === 'tensorrt-llm';
    // A TensorRT-LLM folder carries no tokenizer (TensorRT-LLM ignores llmopt.json; a rerun may replace the folder).
    const format = trt ? ('llmopt-tensorrt-llm' as const) : ('llmopt-sharded' as const);
    const folder = { format, source, filesFrom: trt ? null : source, passes: [shardRecord(opts, plan)] };
    const rankBytes = await writeModelFolder(output, folder, async (tmp, manifest) => {
      if (trt) return writeTensorRtLlmCheckpoint(tmp, spec, model.weights, plan.tp, plan.pp, plan.vocab === 'split', trtRanks, tick);
      const runId = randomUUID();
      const ranks: RankRecord[] = [];
      for (const r of plan.ranks) ranks.push(await writeOnnxRank(tmp, spec, model.weights, plan, r, runId, opts, tick));
      writeFileSync(join(tmp, 'config.json'), configBytes);
      // What the sharded runtime reads on top of the common manifest (runtime/sharded/manifest.ts, ShardManifest).
      const { tp, pp, worldSize, kv: kvHeads, vocab } = plan;
      const { attention } = opts;
      const layout: ShardManifest['layout'] = { tp, pp, worldSize, attention, kvHeads, vocab, stages: plan.stages.map(pair) };
      Object.assign(manifest, { runId, layout, ranks });
      return ranks.map((r) => Object.values(r.files).reduce((a, f) => a + f.bytes, 0));
    });
    const mean = rankBytes.reduce((a, b) => a + b, 0) / rankBytes.length;
    return {
      output,
      format: opts.format,
      tp: plan.tp,
      pp: plan.pp,
      worldSize: plan.worldSize,
      stages: plan.stages.map(pair),
      kvHeads: plan.kv,
      vocab: plan.vocab,
      ranks: plan.ranks.map((r, i) => ({ rank: r.rank, stage: r.stage, tpRank: r.tpRank, layers: pair(r.layers), bytes: rankBytes[i]! })),
      balance: Math.max(...rankBytes) / mean,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    await model.close();
  }
}

function shardRecord(opts: ShardOptions, plan: ShardPlan) {
  const { tp, pp, vocab } = plan;
  return passRecord('shard', { tp, pp, stages: plan.stages.map(pair), vocab, attention: opts.attention, format: opts.format });
}
