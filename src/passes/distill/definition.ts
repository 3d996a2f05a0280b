// distill's declaration: trains a student (a pruned folder, a subset of the teacher's layers, or with
// --quantize-aware the teacher itself through quantize's rounding) to match its teacher, and writes it as a
// Hugging Face folder; with eval_data, KL / top-1 / perplexity after.
import {
  boolean,
  choice,
  deviceOptions,
  int,
  intList,
  number,
  OptionError,
  outputFolder,
  printOptions,
  stageRef,
  string,
  textFile,
} from '../options.js';
import { definePass, QUALITY_GATES } from '../pass.js';
import { distill } from './distill.js';
import { QAT_TARGETS } from '../quantize/qat.js';
import { BLOCK_SIZES } from '../quantize/quantize.js';

export const DISTILL_OPTIONS = {
  ...deviceOptions({}),
  teacher: stageRef({ arg: '<dir>', required: true, recipeDefault: 'source', help: 'teacher: a Hugging Face folder' }),
  // In a recipe the student is the stage's input.
  student: string({
    arg: '<dir>',
    only: 'cli',
    help: 'student: a Hugging Face folder of the same architecture (e.g. a pruned model; with --quantize-aware, default: the teacher)',
  }),
  studentLayers: int({ min: 1, help: 'student: n evenly spaced layers of the teacher' }),
  studentLayerIds: intList({ arg: '<ids>', min: 0, what: 'layer', nonEmpty: true, help: 'student: these teacher layers, e.g. 0,3' }),
  data: textFile({ required: true, recipeDefault: true, help: 'training text, one document per line' }),
  evalData: textFile({ help: 'held-out text: KL / top-1 / perplexity against the teacher before, during and after' }),
  evalEvery: int({ min: 1, help: 'evaluate every n steps' }),
  evalLimit: int({ min: 1, help: 'use only the first n documents of --eval-data' }),
  steps: int({ min: 1, default: 800, help: 'optimizer steps' }),
  batch: int({ min: 1, default: 16, help: 'sequences per step' }),
  seqLen: int({ min: 2, help: 'tokens per packed sequence (default: min(128, context))' }),
  lr: number({ arg: '<f>', positive: true, default: 3e-4, help: 'peak learning rate (AdamW)' }),
  warmup: int({ min: 0, help: 'linear warmup steps (default: 5% of --steps)' }),
  temperature: number({ arg: '<t>', positive: true, default: 2, help: 'distillation temperature T (loss: T^2 KL at T)' }),
  alpha: number({ arg: '<a>', min: 0, default: 0.1, help: 'weight of next-token cross-entropy on the data' }),
  hiddenLoss: number({
    arg: '<w>',
    min: 0,
    help: "add w x the mean squared difference between each student layer's output and its teacher layer's",
  }),
  weightDecay: number({ arg: '<f>', min: 0, default: 0.01, help: 'AdamW weight decay (not on norms and biases)' }),
  clipNorm: number({ arg: '<f>', min: 0, default: 1, help: 'clip the global gradient norm (0: off)' }),
  seed: int({ min: 0, default: 0, help: 'data order seed' }),
  keepSparsity: boolean({ help: 'pruned weights stay exactly zero (gradients and updates masked)' }),
  quantizeAware: choice(QAT_TARGETS, {
    arg: '<precision>',
    help:
      "train through `quantize --to <precision>`'s rounding (round-to-nearest on MatMulNBits blocks, the embedding and " +
      "lm_head at 8 bits, int8's blocks with zero points, as quantize does for the CPU), gradients straight through; " +
      'writes the rounded weights',
  }),
  qatBlockSize: int({
    min: 1,
    default: 32,
    help: '--quantize-aware: weights per block, 16 | 32 | 64 | 128 (quantize with the same --block-size)',
  }),
  qatAsymmetric: boolean({ help: '--quantize-aware int4: a zero point per block (quantize with --asymmetric; int8 has them)' }),
  qatFloatEmbeddings: boolean({
    help: '--quantize-aware: keep the embedding and lm_head in float (quantize with --float-embeddings)',
  }),
  maxMinutes: number({ arg: '<m>', positive: true, help: 'stop training after this long (the schedule still follows --steps)' }),
  checkpointEvery: int({ min: 1, help: 'write a resumable checkpoint every n steps' }),
  // A recipe keeps checkpoints in its run folder and resumes by skipping finished stages.
  checkpointDir: string({ arg: '<dir>', only: 'cli', help: 'where checkpoints go (default: <output>.ckpt)' }),
  resume: boolean({ only: 'cli', help: 'continue from the checkpoint' }),
  ...outputFolder('Hugging Face folder of the trained student'),
  ...printOptions('no progress bar'),
};

const shallow = (o: { studentLayers?: number; studentLayerIds?: number[] }) =>
  o.studentLayers !== undefined || o.studentLayerIds !== undefined;
const QAT_DETAILS = ['qatBlockSize', 'qatAsymmetric', 'qatFloatEmbeddings'] as const;

export const distillPass = definePass({
  name: 'distill',
  options: DISTILL_OPTIONS,
  reads: { input: ['hf'], teacher: ['hf'] },
  readHint: 'distill the float (pruned) model, then quantize',
  // A shallow student is cut from the teacher: the stage's input is not read.
  readsInput: (o) => !shallow(o),
  writes: () => ({ kind: 'hf' }),
  figures: (o) => (o.evalData !== undefined ? QUALITY_GATES : []),
  gateHint: '; set eval_data: true on the stage to measure it, or gate an eval stage',
  validate: (o, given) => {
    if (o.studentLayers !== undefined && o.studentLayerIds !== undefined) {
      throw new OptionError('studentLayerIds', (n) => `${n('studentLayers')} and ${n('studentLayerIds')} are alternatives: give one`);
    }
    for (const key of QAT_DETAILS)
      if (given.has(key) && o.quantizeAware === undefined)
        throw new OptionError(key, (n) => `${n(key)}: a --quantize-aware option; add ${n('quantizeAware')} int4 or int8`);
    if (!(BLOCK_SIZES as readonly number[]).includes(o.qatBlockSize))
      throw new OptionError('qatBlockSize', (n) => `${n('qatBlockSize')} ${o.qatBlockSize}: choose one of ${BLOCK_SIZES.join(', ')}`);
    if (o.qatAsymmetric && o.quantizeAware === 'int8')
      throw new OptionError(
        'qatAsymmetric',
        (n) => `${n('qatAsymmetric')}: int8's blocks take zero points already (quantize's CPU default for int8)`,
      );
  },
  run: (o, ctx) =>
    distill(ctx.output, {
      ...o,
      teacher: ctx.reads.teacher!,
      student: o.student ?? (shallow(o) ? undefined : ctx.reads.input),
      maxSeconds: o.maxMinutes === undefined ? undefined : o.maxMinutes * 60,
      checkpointDir: o.checkpointDir ?? ctx.checkpointDir,
      device: ctx.device,
      signal: ctx.signal,
      onStep: (s) => {
        ctx.onProgress?.(s.step, s.steps);
        if (s.eval) ctx.onLog?.(`step ${s.step}: eval KL ${s.eval.kl.toFixed(4)}, perplexity ${s.eval.perplexity.toFixed(3)}`);
      },
    }),
  measured: ({ after: a }) => (a ? { kl: a.kl, top1: a.top1, perplexity: a.perplexity, pplRatio: a.perplexity / a.teacherPerplexity } : {}),
});
