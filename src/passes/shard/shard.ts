// shard: Hugging Face checkpoint -> tensor- and pipeline-parallel ranks. Either per-rank ONNX graphs
// with a manifest that llmopt's sharded runtime runs, or a TensorRT-LLM checkpoint. Written atomically.
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createHash, randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import { InputError } from '../../errors.js';
import type { OptionValues } from '../options.js';
import type { SHARD_OPTIONS } from './definition.js';
import { GraphBuilder, encodeModel } from '../../formats/onnx/graph.js';
import { ExternalDataWriter } from '../../formats/onnx/external-data.js';
import { assertGraphValid } from '../../formats/onnx/check.js';
import { TOKENIZER_FILES } from '../../formats/tokenizer.js';
import { TOOL_VERSION, isArtifact, priorPasses } from '../../formats/artifact.js';
import { MANIFEST_FILE, writeOutputDir } from '../../formats/output-dir.js';
import { tensorRtLlmRankTensors, tensorRtLlmStages, writeTensorRtLlmCheckpoint, type TensorRtLlmRank } from '../../formats/tensorrt-llm.js';
import { openHfModel } from '../../model/checkpoint.js';
import { buildSegmentGraph } from '../../model/decoder.js';
import { EMBED_TOKENS, expectedTensors, type DecoderSpec } from '../../model/spec.js';
import { RANK_FILE, SHARD_FORMAT, sha256File, type RankRecord, type ShardManifest } from '../../runtime/sharded/manifest.js';
import { checkAttentionForm } from '../export.js';
import { planShard, rankSpec, type RankPlan, type ShardPlan, type VocabMode } from './plan.js';
import { rankSegments } from './segments.js';
import { rankWeights } from './slice.js';

/** The rank graphs' KV caches are kept per rank in past/present form (the inplace form is not sharded). */
export const SHARD_ATTENTION_FORMS = ['fused', 'standard'] as const;
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

async function writeOnnxRank(tmp: string, spec: DecoderSpec, weights: Parameters<typeof rankWeights>[0], plan: ShardPlan, r: RankPlan, runId: string, opts: ShardOptions, tick: () => void): Promise<RankRecord> {
  const dir = `rank${r.rank}`;
  const rankDir = join(tmp, dir);
  mkdirSync(rankDir);
  const local = rankSpec(spec, r);
  const sliced = rankWeights(weights, spec, r);
  const segments = rankSegments(plan, r);
  for (const seg of segments) {
    const dataName = `${seg.file}.data`;
    const data = new ExternalDataWriter(join(rankDir, dataName), dataName);
    const g = new GraphBuilder(data);
    try {
      await buildSegmentGraph(g, local, sliced, seg, { attention: opts.attention, onTensor: tick });
    } finally {
      data.close();
    }
    const bytes = encodeModel(g, `llmopt_rank${r.rank}_${seg.id}`, { opset: 17, producerVersion: TOOL_VERSION });
    assertGraphValid(bytes);
    writeFileSync(join(rankDir, seg.file), bytes);
  }
  writeFileSync(join(rankDir, RANK_FILE), JSON.stringify({ runId, rank: r.rank }) + '\n');
  const files: RankRecord['files'] = {};
  for (const f of readdirSync(rankDir).sort()) files[f] = { bytes: statSync(join(rankDir, f)).size, sha256: await sha256File(join(rankDir, f)) };
  const tensors: Record<string, number[]> = {};
  for (const name of rankTensorNames(spec, r)) tensors[name] = sliced.shape(name);
  return { rank: r.rank, stage: r.stage, tpRank: r.tpRank, dir, layers: pair(r.layers), heads: pair(r.heads), kvHeads: pair(r.kvHeads), ffn: pair(r.ffn), vocab: pair(r.vocab), segments, tensors, files };
}

/** Shards `source` into `output`; validates everything before writing anything. */
export async function shardModel(source: string, output: string, opts: ShardOptions): Promise<ShardReport> {
  const started = Date.now();
  if (isArtifact(source)) throw new InputError(`${source}: is an ONNX artifact; shard takes a float Hugging Face checkpoint (quantized artifacts cannot be sharded: shard first, quantize is not supported on shards yet)`);
  const model = await openHfModel(source);
  const { spec } = model;
  try {
    if (model.quantization) throw new InputError(`${source}: is already quantized (${model.quantization}); shard takes a float checkpoint (quantized inputs are not supported)`);
    if (opts.format === 'tensorrt-llm' && opts.stages !== undefined) throw new InputError('--stages does not apply to --format tensorrt-llm: TensorRT-LLM assigns layers to stages itself (mapping.pp_layers)');
    checkAttentionForm(spec, opts.attention, source);
    if (!(SHARD_ATTENTION_FORMS as readonly string[]).includes(opts.attention)) throw new InputError(`--attention ${opts.attention}: sharded models are built with ${SHARD_ATTENTION_FORMS.join(' or ')} attention`);
    const plan = planShard(spec, { tp: opts.tp, pp: opts.pp, stages: opts.format === 'tensorrt-llm' ? undefined : opts.stages, vocab: opts.vocab });
    if (opts.format === 'tensorrt-llm') {
      const stages = tensorRtLlmStages(spec.numLayers, plan.pp);
      plan.stages = stages;
      for (const r of plan.ranks) r.layers = stages[r.stage]!;
    }
    const configBytes = readFileSync(join(source, 'config.json'));
    const trtRanks: TensorRtLlmRank[] = plan.ranks.map((r) => ({ rank: r.rank, tpRank: r.tpRank, layers: r.layers, first: r.embedding, last: r.head, weights: rankWeights(model.weights, spec, r, 'every') }));
    const total =
      opts.format === 'tensorrt-llm' ? trtRanks.reduce((a, r) => a + tensorRtLlmRankTensors(spec, plan.tp, r).length, 0) : plan.ranks.reduce((a, r) => a + rankTensorNames(spec, r).length, 0);
    let done = 0;
    const tick = () => opts.onProgress?.(++done, total);
    const rankBytes = await writeOutputDir(output, async (tmp) => {
      if (opts.format === 'tensorrt-llm') {
        const bytes = await writeTensorRtLlmCheckpoint(tmp, spec, model.weights, plan.tp, plan.pp, plan.vocab === 'split', trtRanks, tick);
        // So that a later run may replace the folder (writeOutputDir's rule); TensorRT-LLM ignores it.
        writeFileSync(join(tmp, MANIFEST_FILE), JSON.stringify({ format: 'llmopt-tensorrt-llm', tool: { name: 'llmopt', version: TOOL_VERSION }, source: resolve(source), passes: [...priorPasses(source), shardRecord(opts, plan)] }, null, 2) + '\n');
        return bytes;
      }
      const runId = randomUUID();
      const ranks: RankRecord[] = [];
      for (const r of plan.ranks) ranks.push(await writeOnnxRank(tmp, spec, model.weights, plan, r, runId, opts, tick));
      writeFileSync(join(tmp, 'config.json'), configBytes);
      for (const f of ['generation_config.json', ...TOKENIZER_FILES]) if (existsSync(join(source, f))) copyFileSync(join(source, f), join(tmp, f));
      const manifest: ShardManifest = {
        format: SHARD_FORMAT,
        formatVersion: 1,
        tool: { name: 'llmopt', version: TOOL_VERSION },
        runId,
        source: { path: resolve(source), configSha256: createHash('sha256').update(configBytes).digest('hex') },
        layout: { tp: plan.tp, pp: plan.pp, worldSize: plan.worldSize, attention: opts.attention, kvHeads: plan.kv, vocab: plan.vocab, stages: plan.stages.map(pair) },
        ranks,
        passes: [...priorPasses(source), shardRecord(opts, plan)],
      };
      writeFileSync(join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
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
  return { pass: 'shard', options: { tp: plan.tp, pp: plan.pp, stages: plan.stages.map(pair), vocab: plan.vocab, attention: opts.attention, format: opts.format }, at: new Date().toISOString() };
}

