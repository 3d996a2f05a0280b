// A recipe stage's snake_case options as the typed options object of its pass: the one mapping both
// the up-front validation and the run use, so that what was validated is what runs.
import { parseSparsity, type PruneOptions } from '../passes/prune/prune.js';
import type { QuantizeOptions } from '../passes/quantize/quantize.js';
import type { AccuracyLevel } from '../passes/quantize/matmul-nbits.js';
import type { ShardOptions } from '../passes/shard/shard.js';
import type { DistillOptions } from '../passes/distill/distill.js';
import type { BenchOptions } from '../bench/bench.js';
import type { Device } from '../runtime/device.js';
import type { StageOptions } from './schema.js';

/** Resolved paths of text files: the loader has replaced `true` by the recipe's data. */
const file = (v: string | true | undefined): string | undefined => (v === true ? undefined : v);

export function pruneOptions(o: StageOptions<'prune'>): PruneOptions {
  return {
    structure: parseSparsity(String(o.sparsity), o.scope),
    method: o.method,
    calib: file(o.calib),
    calibSamples: o.calib_samples,
    calibSeqLen: o.calib_seq_len,
    exclude: o.exclude,
    dampening: o.dampening,
    sequential: o.sequential,
  };
}

export function quantizeOptions(o: StageOptions<'quantize'>): QuantizeOptions {
  return {
    to: o.to,
    method: o.method,
    blockSize: o.block_size,
    symmetric: !o.asymmetric,
    accuracyLevel: o.accuracy_level as AccuracyLevel,
    exclude: o.exclude,
    quantizeEmbeddings: o.quantize_embeddings,
    format: o.format,
    attention: o.attention,
    calib: file(o.calib),
    calibSamples: o.calib_samples,
    calibSeqLen: o.calib_seq_len,
    actOrder: o.act_order,
    dampening: o.dampening,
  };
}

export function shardOptions(o: StageOptions<'shard'>): ShardOptions {
  return { tp: o.tp, pp: o.pp, stages: o.stages, vocab: o.vocab, attention: o.attention, format: o.format };
}

/** Distillation of `student` (a folder) or of a shallow student cut from `teacher` (student_layers / ids). */
export function distillOptions(o: StageOptions<'distill'>, teacher: string, student: string, device: Device, checkpointDir: string): DistillOptions {
  const shallow = o.student_layers !== undefined || o.student_layer_ids !== undefined;
  return {
    teacher,
    student: shallow ? undefined : student,
    studentLayers: o.student_layers,
    studentLayerIds: o.student_layer_ids,
    data: file(o.data)!,
    evalData: file(o.eval_data),
    evalEvery: o.eval_every,
    evalLimit: o.eval_limit,
    steps: o.steps,
    batch: o.batch,
    seqLen: o.seq_len,
    lr: o.lr,
    warmup: o.warmup,
    temperature: o.temperature,
    alpha: o.alpha,
    hiddenLoss: o.hidden_loss,
    weightDecay: o.weight_decay,
    clipNorm: o.clip_norm,
    seed: o.seed,
    keepSparsity: o.keep_sparsity,
    maxSeconds: o.max_minutes === undefined ? undefined : o.max_minutes * 60,
    checkpointEvery: o.checkpoint_every,
    checkpointDir,
    device,
    threads: o.threads,
  };
}

export function benchOptions(o: StageOptions<'bench'>, artifact: string, draft: string | undefined, device: Device): BenchOptions {
  return {
    artifacts: [artifact],
    batches: o.batch,
    promptLen: o.prompt_len,
    genLen: o.gen_len,
    prompt: o.prompt,
    reps: o.reps,
    trace: o.requests
      ? { requests: o.requests, arrivalRate: o.arrival_rate || Infinity, promptLen: o.trace_input ?? [Math.min(16, o.prompt_len), o.prompt_len], genLen: o.trace_output ?? [Math.min(8, o.gen_len), o.gen_len], slots: o.slots ?? Math.max(8, ...o.batch), seed: o.seed }
      : undefined,
    draft,
    draftTokens: o.draft_tokens,
    sampling: { temperature: o.temperature, topK: o.top_k, topP: o.top_p, seed: o.seed },
    device,
    threads: o.threads,
  };
}
