// Quantization benchmark (`npm run bench:quantize`): on the synthetic ~110M checkpoint, file size,
// quantization time and peak RSS (each variant in its own process), then prefill and decode tokens/s at
// batch 1 and 8 for fp32, int8 and int4, all loaded in one process and measured alternately; speeds are
// also given as ratios to fp32 taken per repetition, so machine noise between repetitions cancels. With
// --quantize-only --variants int4,int4-awq,...: the methods' time and peak RSS alone.
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportModel } from '../src/passes/export.js';
import { quantize, type QuantizeOptions } from '../src/passes/quantize/quantize.js';
import { DecoderModel } from '../src/runtime/decoder.js';

/** Calibration text for the calibrated variants unless --calib names one (the synthetic model reads any text). */
const SAMPLE_CALIB = fileURLToPath(new URL('../fixtures/text/sample.txt', import.meta.url));
import {
  SYNTHETIC,
  args,
  describeMachine,
  describeModel,
  flag,
  formatStats,
  formatTable,
  log,
  machine,
  reportJob,
  runChild,
  stats,
  textFlag,
  timeRun,
  withSyntheticCheckpoint,
} from './bench/common.js';

type Precision = Pick<QuantizeOptions, 'to' | 'accuracyLevel' | 'quantizeEmbeddings'> & Partial<Pick<QuantizeOptions, 'method' | 'clip'>>;
const INT4 = { to: 'int4', accuracyLevel: 0, quantizeEmbeddings: false } as const;

/** What each variant is; null quantization means the plain float32 export every ratio is taken against. */
const VARIANTS: Record<string, { label: string; precision: Precision | null }> = {
  fp32: { label: 'fp32 (plain export)', precision: null },
  int8: { label: 'int8 RTN b32 sym', precision: { to: 'int8', accuracyLevel: 0, quantizeEmbeddings: false } },
  int4: { label: 'int4 RTN b32 sym', precision: { to: 'int4', accuracyLevel: 0, quantizeEmbeddings: false } },
  'int4-acc4': { label: 'int4 RTN b32 sym, accuracy_level 4', precision: { to: 'int4', accuracyLevel: 4, quantizeEmbeddings: false } },
  // Not in the default set; for finding out where decode time goes (--variants).
  'int8-acc4': { label: 'int8 RTN b32 sym, accuracy_level 4', precision: { to: 'int8', accuracyLevel: 4, quantizeEmbeddings: false } },
  'int4-acc4-head': {
    label: 'int4 b32 sym, acc 4, + embedding/lm_head',
    precision: { to: 'int4', accuracyLevel: 4, quantizeEmbeddings: true },
  },
  // The methods' cost (--variants, with --quantize-only to skip the speed runs): calibrated on --calib text.
  'int4-clip': { label: 'int4 RTN + clip search (no calib)', precision: { ...INT4, clip: 'search' } },
  'int4-gptq': { label: 'int4 GPTQ', precision: { ...INT4, method: 'gptq' } },
  'int4-gptq-clip': { label: 'int4 GPTQ + clip search', precision: { ...INT4, method: 'gptq', clip: 'search' } },
  'int4-awq': { label: 'int4 AWQ', precision: { ...INT4, method: 'awq' } },
  'int4-awq-clip': { label: 'int4 AWQ + clip search', precision: { ...INT4, method: 'awq', clip: 'search' } },
  'int4-awq-gptq': { label: 'int4 AWQ + GPTQ', precision: { ...INT4, method: 'awq+gptq' } },
};
const CALIBRATED = new Set(['gptq', 'awq', 'awq+gptq']);
const DEFAULT_VARIANTS = 'fp32,int8,int4,int4-acc4';

/** Child: one quantization (or the fp32 export), timed, with its own peak RSS. */
async function childQuantize(source: string, out: string, variant: string, calib: string, calibSamples: number): Promise<void> {
  const precision = VARIANTS[variant]!.precision;
  await reportJob(async () => {
    if (!precision) await exportModel(source, out, { attention: 'fused', layout: 'llmopt' });
    else
      await quantize(source, out, {
        method: 'rtn',
        ...precision,
        ...(CALIBRATED.has(precision.method ?? 'rtn') ? { calib, calibSamples } : {}),
        blockSize: 32,
        symmetric: true,
        exclude: [],
        format: 'onnx',
        attention: 'fused',
      });
    return {};
  });
}

/** Bytes of the ONNX graph and its external weights, what a deployment ships. */
function artifactBytes(dir: string): number {
  return readdirSync(dir)
    .filter((f) => f.startsWith('model.onnx'))
    .reduce((sum, f) => sum + statSync(join(dir, f)).size, 0);
}

async function main(): Promise<void> {
  const reps = flag('reps', 3);
  const promptLen = flag('prompt-len', 128);
  const genLen = flag('gen-len', 64);
  const threads = flag('threads', 0) || undefined;
  const batches = (textFlag('batches') ?? '1,8').split(',').map(Number);
  const quantizeOnly = args.includes('--quantize-only');
  const calib = textFlag('calib') ?? SAMPLE_CALIB;
  const calibSamples = flag('calib-samples', 32);
  // fp32 always runs, first: every ratio is to it.
  const keys = ['fp32', ...(textFlag('variants') ?? DEFAULT_VARIANTS).split(',').filter((k) => k !== 'fp32')];
  const unknown = keys.filter((k) => !VARIANTS[k]);
  if (unknown.length) throw new Error(`--variants: unknown ${unknown.join(', ')}; choose from ${Object.keys(VARIANTS).join(', ')}`);

  await withSyntheticCheckpoint(async (work, source) => {
    const built = keys.map((key) => {
      log(`quantize ${key} ...`);
      const dir = join(work, key);
      const job = runChild(import.meta.url, 'quantize', source, dir, key, calib, String(calibSamples));
      log(`  ${key}: ${(job.seconds as number).toFixed(1)} s, peak RSS ${(job.peakRssMiB as number).toFixed(0)} MiB`);
      return { key, dir, seconds: job.seconds as number, peakRssMiB: job.peakRssMiB as number, fileBytes: artifactBytes(dir) };
    });
    if (quantizeOnly) {
      console.log(describeMachine(machine()));
      console.log(describeModel(statSync(join(built[0]!.dir, 'model.onnx.data')).size / 4));
      console.log(`\nquantization, each in its own process (block 32, symmetric; calibrated: ${calibSamples} windows of ${calib}):`);
      console.log(
        formatTable([
          ['variant', 'file MiB', 'time s', 'peak RSS MiB'],
          ...built.map((b) => [VARIANTS[b.key]!.label, (b.fileBytes / 2 ** 20).toFixed(1), b.seconds.toFixed(1), b.peakRssMiB.toFixed(0)]),
        ]),
      );
      return;
    }

    log(
      `speed: ${reps} repetitions, batch ${batches.join(' and ')}, prompt ${promptLen}, generate ${genLen}, threads ${threads ?? 'default'}, alternating ...`,
    );
    const models = await Promise.all(built.map((b) => DecoderModel.open(b.dir, { device: 'cpu', threads })));
    // runs[variant][batch]: one figure per repetition.
    const runs = keys.map(() => batches.map(() => ({ prefill: [] as number[], decode: [] as number[] })));
    for (const batch of batches) for (const m of models) await timeRun(m, promptLen, 8, batch); // warm-up, not counted
    for (let r = 0; r < reps; r++) {
      for (let bi = 0; bi < batches.length; bi++) {
        for (let v = 0; v < keys.length; v++) {
          const m = await timeRun(models[v]!, promptLen, genLen, batches[bi]!);
          runs[v]![bi]!.prefill.push(m.prefill);
          runs[v]![bi]!.decode.push(m.decode);
        }
      }
    }
    for (const m of models) await m.release();

    const fp32 = runs[0]!;
    const perBatch = <T>(v: number, measure: (run: { prefill: number[]; decode: number[] }, bi: number) => T): Record<string, T> =>
      Object.fromEntries(batches.map((b, bi) => [`batch${b}`, measure(runs[v]![bi]!, bi)]));
    const report = {
      machine: machine(),
      model: { ...SYNTHETIC.config, parameters: statSync(join(built[0]!.dir, 'model.onnx.data')).size / 4 },
      settings: {
        reps,
        promptLen,
        genLen,
        batches,
        threads: threads ?? 'onnxruntime default (all cores)',
        blockSize: 32,
        symmetric: true,
        method: 'rtn',
      },
      variants: built.map((b, v) => ({
        variant: b.key,
        label: VARIANTS[b.key]!.label,
        precision: VARIANTS[b.key]!.precision,
        fileBytes: b.fileBytes,
        fileRatioToFp32: b.fileBytes / built[0]!.fileBytes,
        quantizeSeconds: b.seconds,
        quantizePeakRssMiB: b.peakRssMiB,
        tokensPerSecond: perBatch(v, (run) => ({ prefill: stats(run.prefill), decode: stats(run.decode) })),
        ratioToFp32: perBatch(v, (run, bi) => ({
          prefill: stats(run.prefill.map((x, i) => x / fp32[bi]!.prefill[i]!)),
          decode: stats(run.decode.map((x, i) => x / fp32[bi]!.decode[i]!)),
        })),
        runs: perBatch(v, (run) => run),
      })),
    };
    const out = textFlag('json');
    if (out) writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);

    console.log(describeMachine(report.machine));
    console.log(describeModel(report.model.parameters));
    console.log(`\nquantization, each in its own process (RTN, block 32, symmetric; embedding and lm_head stay fp32 unless named):`);
    console.log(
      formatTable([
        ['variant', 'file MiB', 'x fp32', 'time s', 'peak RSS MiB'],
        ...report.variants.map((v) => [
          v.label,
          (v.fileBytes / 2 ** 20).toFixed(1),
          v.fileRatioToFp32.toFixed(3),
          v.quantizeSeconds.toFixed(1),
          v.quantizePeakRssMiB.toFixed(0),
        ]),
      ]),
    );
    const columns = batches.flatMap((b) => [`b${b} prefill`, `b${b} decode`]);
    const cells = (v: (typeof report.variants)[number], key: 'tokensPerSecond' | 'ratioToFp32', digits: number) =>
      batches.flatMap((b) => [formatStats(v[key][`batch${b}`]!.prefill, digits), formatStats(v[key][`batch${b}`]!.decode, digits)]);
    console.log(
      `\ntokens/s (all rows of a batch), prompt ${promptLen}, generate ${genLen}, ${reps} reps, threads ${threads ?? 'default'}: median (min-max)`,
    );
    console.log(formatTable([['variant', ...columns], ...report.variants.map((v) => [v.label, ...cells(v, 'tokensPerSecond', 1)])]));
    console.log(`\nratio to fp32, taken per repetition in the same run: median (min-max)`);
    console.log(formatTable([['variant', ...columns], ...report.variants.slice(1).map((v) => [v.label, ...cells(v, 'ratioToFp32', 2)])]));
  });
}

if (args[0] === '--child') await childQuantize(args[2]!, args[3]!, args[4]!, args[5]!, Number(args[6]));
else await main();
