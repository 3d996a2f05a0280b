// distill: trains a student to match a teacher's output distribution (KL at temperature T, plus
// alpha x next-token cross-entropy) with AdamW, on packed text, through a training graph run by
// onnxruntime, optionally through quantize's rounding (quantize/qat.ts); evaluates KL / perplexity against
// the teacher before, during and after; writes the student as a Hugging Face folder and a training log;
// resumable checkpoints are in checkpoint.ts.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { InputError, LlmoptError } from '../../core/errors.js';
import type { OptionValues } from '../options.js';
import type { DISTILL_OPTIONS } from './definition.js';
import { loadTokenizer } from '../../formats/tokenizer.js';
import { copyModelFiles, writeModelFolder } from '../../formats/model-folder.js';
import { readModelSpec } from '../../model/architectures/index.js';
import { loadEvalWindows, type EvalWindow } from '../../eval/dataset.js';
import { evaluate } from '../../eval/evaluate.js';
import { exportModel } from '../export.js';
import { DecoderModel } from '../../runtime/decoder.js';
import { forwardOnce } from '../../runtime/model.js';
import { LINEAR_KINDS } from '../targets.js';
import { BatchSchedule, packText } from './data.js';
import { AdamW, ADAMW_DEFAULTS, type OptimizerState } from './optimizer.js';
import { readCheckpoint, writeCheckpoint, type CheckpointState } from './checkpoint.js';
import { evenlySpacedLayers, loadStudent, saveStudent, shallowStudent, type Student } from './student.js';
import { buildTrainingGraph } from './train-graph.js';
import { TrainingSession } from './trainer.js';
import { TeacherForward } from './teacher.js';
import { openHfModel } from '../../model/checkpoint.js';
import { FakeQuantizer, qatScheme, type QatScheme } from '../quantize/qat.js';

type Declared = OptionValues<typeof DISTILL_OPTIONS>;
type QatDetails = 'qatBlockSize' | 'qatAsymmetric' | 'qatFloatEmbeddings';
/** The pass's options: the declared ones (distill/definition.ts), with --max-minutes as seconds. */
export type DistillOptions = Omit<
  Declared,
  'maxMinutes' | 'weightDecay' | 'clipNorm' | 'resume' | 'output' | 'json' | 'quiet' | QatDetails
> &
  Partial<Pick<Declared, 'weightDecay' | 'clipNorm' | 'resume' | QatDetails>> & {
    /** Stop after this many seconds of training (the step count still sets the schedule). */
    maxSeconds?: number;
    onStep?: (s: StepLog) => void;
    /** Aborting (Ctrl-C) writes a checkpoint and stops after the current step. */
    signal?: AbortSignal;
  };

export interface StepLog {
  step: number;
  steps: number;
  loss: number;
  kl: number;
  ce: number;
  hiddenMse: number | null;
  lr: number;
  gradNorm: number;
  tokensPerSecond: number;
  seconds: number;
  eval?: EvalFigures;
}

export interface EvalFigures {
  kl: number;
  top1: number;
  perplexity: number;
  teacherPerplexity: number;
}

export interface DistillReport {
  output: string;
  student: string;
  layerIds: number[] | null;
  steps: number;
  stoppedEarly: 'time' | 'interrupted' | null;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  before: EvalFigures | null;
  after: EvalFigures | null;
  sparsityKept: boolean | null;
  /** What the student was trained through (--quantize-aware), or null. */
  quantizeAware: QatScheme | null;
  log: string;
}

function validate(o: DistillOptions): void {
  const positive = (v: number | undefined, flag: string, integer = false) => {
    if (v === undefined) return;
    if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v)))
      throw new InputError(`${flag} ${v}: expected a positive ${integer ? 'integer' : 'number'}`);
  };
  positive(o.steps, '--steps', true);
  positive(o.batch, '--batch', true);
  positive(o.lr, '--lr');
  positive(o.temperature, '--temperature');
  positive(o.seqLen, '--seq-len', true);
  if (o.seqLen !== undefined && o.seqLen < 2) throw new InputError(`--seq-len ${o.seqLen}: sequences need at least 2 tokens`);
  if (o.alpha < 0 || !Number.isFinite(o.alpha)) throw new InputError(`--alpha ${o.alpha}: expected a number >= 0`);
  if (!o.student && o.studentLayers === undefined && !o.studentLayerIds && !o.quantizeAware)
    throw new InputError('give --student <folder> or --student-layers N (or --quantize-aware, to train the teacher itself)');
  if (o.student && (o.studentLayers !== undefined || o.studentLayerIds))
    throw new InputError('--student and --student-layers are alternatives: give one');
  if (!existsSync(o.data)) throw new InputError(`${o.data}: file not found`);
}

/** Mask of nonzero weights of the linear layers (what --keep-sparsity holds at zero). */
function sparsityMasks(weights: Map<string, Float32Array>): Map<string, Uint8Array> {
  const masks = new Map<string, Uint8Array>();
  const linear = new RegExp(`\\.(${LINEAR_KINDS.join('|')})_proj\\.weight$`);
  for (const [name, w] of weights)
    if (linear.test(name))
      masks.set(
        name,
        Uint8Array.from(w, (x) => (x === 0 ? 0 : 1)),
      );
  return masks;
}

export async function distill(output: string, o: DistillOptions): Promise<DistillReport> {
  validate(o);
  const teacherSpec = readModelSpec(o.teacher);
  const seqLen = o.seqLen ?? Math.min(128, teacherSpec.maxPositions);
  const tokenizer = loadTokenizer(o.teacher);
  const data = packText(o.data, tokenizer, seqLen, teacherSpec.eosTokenIds[0] ?? null);
  const scheme = o.quantizeAware
    ? qatScheme(o.quantizeAware, o.qatBlockSize ?? 32, o.qatAsymmetric ?? false, o.qatFloatEmbeddings ?? false)
    : null;
  const shallow = o.studentLayers !== undefined || o.studentLayerIds !== undefined;
  // Quantization-aware training with no other student trains the teacher's own weights.
  const studentDir = o.student ?? (shallow ? undefined : o.teacher);
  let student: Student;
  if (studentDir) student = await loadStudent(studentDir, teacherSpec);
  else student = await shallowStudent(o.teacher, o.studentLayerIds ?? evenlySpacedLayers(teacherSpec.numLayers, o.studentLayers!));
  const rounding = scheme ? new FakeQuantizer(student.spec, scheme) : null;
  // The weights the graph computes with: the float ones, or their rounding (the optimizer updates the float ones).
  const seen = (w: Map<string, Float32Array>) => (rounding ? rounding.apply(w) : w);

  const work = mkdtempSync(join(tmpdir(), 'llmopt-distill-'));
  const checkpointDir = resolve(o.checkpointDir ?? `${output}.ckpt`);
  const log = join(work, 'train-log.jsonl');
  let teacher: DecoderModel | null = null;
  let teacherHidden: TeacherForward | null = null;
  let trainer: TrainingSession | null = null;
  try {
    await exportModel(o.teacher, join(work, 'teacher'), { attention: 'fused', layout: 'llmopt' });
    teacher = await DecoderModel.open(join(work, 'teacher'), { device: o.device, threads: o.threads });
    const graphDir = join(work, 'graph');
    mkdirSync(graphDir);
    // Student layer i is matched to the teacher layer it started from (the same layer for a full-depth student).
    const pairs: Array<[number, number]> = Array.from({ length: student.spec.numLayers }, (_, i) => [
      i,
      student.layerIds ? student.layerIds[i]! : i,
    ]);
    if (o.hiddenLoss && student.spec.hiddenSize !== teacherSpec.hiddenSize)
      throw new InputError(
        `--hidden-loss: student hidden size ${student.spec.hiddenSize} differs from the teacher's ${teacherSpec.hiddenSize}`,
      );
    if (o.hiddenLoss && !student.layerIds && student.spec.numLayers !== teacherSpec.numLayers)
      throw new InputError(
        `--hidden-loss: the student has ${student.spec.numLayers} layers and the teacher ${teacherSpec.numLayers}; ` +
          `the hidden loss matches layers one to one (a shallow student: --student-layers)`,
      );
    const hidden = o.hiddenLoss ? { weight: o.hiddenLoss, pairs } : undefined;
    const graph = await buildTrainingGraph(
      graphDir,
      student.spec,
      { has: (n) => student.weights.has(n), shape: () => [], readFloat32: async (n) => student.weights.get(n)!.slice() },
      () => true,
      { temperature: o.temperature, alpha: o.alpha, hidden },
    );
    if (hidden) {
      const t = await openHfModel(o.teacher);
      try {
        teacherHidden = await TeacherForward.open(
          graphDir,
          t.spec,
          t.weights,
          pairs.map(([, tl]) => tl),
          o.device,
          o.threads,
        );
      } finally {
        await t.close();
      }
    }
    trainer = await TrainingSession.open(graph, o.device, o.threads);
    const weights = new Map([...graph.parameters].map(([n, p]) => [n, p.values]));
    const masks = o.keepSparsity ? sparsityMasks(weights) : new Map<string, Uint8Array>();
    const initialMasks = o.keepSparsity ? new Map([...masks].map(([n, m]) => [n, m.slice()])) : null;

    // Eval: the student exported from its current weights, against the teacher, on held-out text.
    const windows: EvalWindow[] | null = o.evalData ? loadEvalWindows(o.evalData, tokenizer, teacherSpec.maxPositions, o.evalLimit) : null;
    const evalNow = async (tag: string): Promise<EvalFigures | null> => {
      if (!windows) return null;
      const dir = join(work, `eval-${tag}`);
      mkdirSync(dir);
      for (const [n, w] of seen(weights)) student.weights.set(n, w);
      // Saved in float32 (no rounding of the weights being measured), so config.json says float32 too.
      await saveStudent(dir, {
        ...student,
        dtypes: new Map([...student.dtypes].map(([n]) => [n, 'F32'])),
        config: { ...student.config, torch_dtype: 'float32' },
      });
      copyModelFiles(student.filesFrom, dir);
      await exportModel(dir, join(dir, 'onnx'), { attention: 'fused', layout: 'llmopt' });
      const model = await DecoderModel.open(join(dir, 'onnx'), { device: o.device, threads: o.threads });
      try {
        const r = await evaluate(model, windows, teacher!, { batchSize: 8 });
        return { kl: r.reference!.kl, top1: r.reference!.top1, perplexity: r.perplexity, teacherPerplexity: r.reference!.perplexity };
      } finally {
        await model.release();
        rmSync(dir, { recursive: true, force: true });
      }
    };

    let startStep = 0;
    let seconds = 0;
    let tokens = 0;
    let optState: OptimizerState | undefined;
    if (o.resume) {
      const ckpt = await readCheckpoint(checkpointDir, weights);
      optState = ckpt.opt;
      startStep = ckpt.state.step;
      seconds = ckpt.state.seconds;
      tokens = ckpt.state.tokens;
    }
    const optimizer = new AdamW(
      {
        ...ADAMW_DEFAULTS,
        lr: o.lr,
        steps: o.steps,
        warmupSteps: o.warmup ?? Math.floor(o.steps / 20),
        weightDecay: o.weightDecay ?? ADAMW_DEFAULTS.weightDecay,
        clipNorm: o.clipNorm ?? ADAMW_DEFAULTS.clipNorm,
      },
      weights,
      masks,
      optState,
    );
    const schedule = new BatchSchedule(data, o.batch, o.seed);
    const before = startStep === 0 ? await evalNow('before') : null;
    const ckptState = (step: number): CheckpointState => ({
      step,
      seconds,
      tokens,
      options: { teacher: resolve(o.teacher), data: resolve(o.data), seed: o.seed, batch: o.batch, seqLen, steps: o.steps },
    });

    let step = startStep;
    let stoppedEarly: DistillReport['stoppedEarly'] = null;
    let lastGood = startStep;
    while (step < o.steps) {
      if (o.signal?.aborted) {
        stoppedEarly = 'interrupted';
        break;
      }
      if (o.maxSeconds !== undefined && seconds >= o.maxSeconds) {
        stoppedEarly = 'time';
        break;
      }
      const t0 = performance.now();
      const batch = schedule.batch(step);
      let teacherLogits: Float32Array;
      let teacherStates: Float32Array[] = [];
      if (teacherHidden) ({ logits: teacherLogits, hidden: teacherStates } = await teacherHidden.run(batch));
      else {
        const rows = Array.from({ length: batch.B }, (_, b) => Array.from(batch.ids.subarray(b * batch.S, (b + 1) * batch.S), Number));
        teacherLogits = (await forwardOnce(teacher, rows)).data;
      }
      const r = await trainer.step(batch, teacherLogits, seen(weights), student.spec.vocabSize, teacherStates);
      if (!Number.isFinite(r.loss)) {
        const kept =
          lastGood > 0
            ? `the last good checkpoint, step ${lastGood}, is in ${checkpointDir}`
            : 'no checkpoint was written (--checkpoint-every)';
        throw new LlmoptError(`step ${step + 1}: the loss is ${r.loss}; training stopped and ${kept}; try a lower --lr`);
      }
      const { gradNorm, lr } = optimizer.update(r.grads);
      step++;
      const dt = (performance.now() - t0) / 1000;
      seconds += dt;
      const batchTokens = batch.mask.reduce((a, b) => a + b, 0);
      tokens += batchTokens;
      const entry: StepLog = {
        step,
        steps: o.steps,
        loss: r.loss,
        kl: r.kl,
        ce: r.ce,
        hiddenMse: r.hiddenMse,
        lr,
        gradNorm,
        tokensPerSecond: batchTokens / dt,
        seconds,
      };
      if (o.evalEvery && step % o.evalEvery === 0 && step < o.steps) entry.eval = (await evalNow(`step${step}`)) ?? undefined;
      appendFileSync(log, `${JSON.stringify(entry)}\n`);
      o.onStep?.(entry);
      if (o.checkpointEvery && step % o.checkpointEvery === 0) {
        await writeCheckpoint(checkpointDir, weights, optimizer.state, ckptState(step));
        lastGood = step;
      }
    }
    if (stoppedEarly === 'interrupted') await writeCheckpoint(checkpointDir, weights, optimizer.state, ckptState(step));
    const after = await evalNow('after');
    let sparsityKept: boolean | null = null;
    if (initialMasks) {
      sparsityKept = true;
      for (const [n, m0] of initialMasks) {
        const w = weights.get(n)!;
        for (let i = 0; i < w.length; i++) if (m0[i] === 0 && w[i] !== 0) sparsityKept = false;
      }
    }
    // A quantization-aware student is written as its rounding, in float32: the model it was trained to be, which
    // `quantize` with the same scheme reproduces code for code (bfloat16 could not hold those values).
    for (const [n, w] of seen(weights)) student.weights.set(n, w);
    const saved: Student = scheme
      ? { ...student, dtypes: new Map([...student.dtypes].map(([n]) => [n, 'F32'])), config: { ...student.config, torch_dtype: 'float32' } }
      : student;
    const record = {
      pass: 'distill',
      options: {
        teacher: resolve(o.teacher),
        student: studentDir ? resolve(studentDir) : null,
        layerIds: student.layerIds,
        data: resolve(o.data),
        steps: step,
        batch: o.batch,
        seqLen,
        lr: o.lr,
        temperature: o.temperature,
        alpha: o.alpha,
        hiddenLoss: o.hiddenLoss ?? 0,
        seed: o.seed,
        keepSparsity: o.keepSparsity,
        // Only when set, so that the folders of plain distillation read as before.
        ...(scheme ? { quantizeAware: scheme } : {}),
      },
      at: new Date().toISOString(),
    };
    const folder = {
      format: 'llmopt-checkpoint' as const,
      source: studentDir ?? o.teacher,
      filesFrom: student.filesFrom,
      passes: [record],
    };
    await writeModelFolder(output, folder, async (tmp) => {
      await saveStudent(tmp, saved, { llmopt_distill: { ...record.options, before, after } });
      writeFileSync(join(tmp, 'train-log.jsonl'), existsSync(log) ? readFileSync(log) : '');
    });
    return {
      output,
      student: studentDir ?? `${student.layerIds!.length} layers of ${o.teacher} (${student.layerIds!.join(', ')})`,
      layerIds: student.layerIds,
      steps: step,
      stoppedEarly,
      tokens,
      seconds,
      tokensPerSecond: tokens / Math.max(seconds, 1e-9),
      before,
      after,
      sparsityKept,
      quantizeAware: scheme,
      log: join(output, 'train-log.jsonl'),
    };
  } finally {
    await trainer?.release();
    await teacher?.release();
    await teacherHidden?.release();
    rmSync(work, { recursive: true, force: true });
  }
}
