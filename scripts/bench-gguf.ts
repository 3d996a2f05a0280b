// GGUF writing benchmark (`npm run bench:gguf`): the synthetic ~110M float32 checkpoint written as F16, Q8_0, Q4_0 and
// Q4_K_M GGUF files by llmopt (Hugging Face folder in, each write in its own child process: time and peak RSS) next to
// llama.cpp's llama-quantize on the same machine in the same run (from llmopt's F32 GGUF, as llama-quantize reads GGUF;
// time and peak RSS from /usr/bin/time), repetitions interleaved, median and range. Each target's two files are also
// compared tensor by tensor. --smoke runs a tiny shape; --threads N is both sides' thread count (default: all cores).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufHeader, readGgufTensor } from '../src/formats/gguf/file.js';
import { writeSyntheticLlama } from '../src/model/synthetic.js';
import { exportGguf } from '../src/passes/export/gguf.js';
import { quantizeGguf, type GgufTarget } from '../src/passes/quantize/gguf.js';
import {
  SMOKE,
  SYNTHETIC,
  args,
  describeMachine,
  flag,
  formatStats,
  formatTable,
  log,
  machine,
  reportJob,
  runChild,
  stats,
  textFlag,
} from './bench/common.js';

const LLAMACPP = join(import.meta.dirname, '..', '..', 'shared', 'tools', 'llama.cpp', 'bin');
const QUANTIZE = join(LLAMACPP, 'llama-quantize');
const TARGETS: GgufTarget[] = ['f16', 'q8_0', 'q4_0', 'q4_k_m'];
const MiB = 2 ** 20;

/** Child: llmopt writes one GGUF file of `target` from the Hugging Face folder, reporting its time and peak RSS. */
async function childWrite(source: string, out: string, target: string, threads: number): Promise<void> {
  await reportJob(async () => {
    if (target === 'f32' || target === 'f16') {
      const r = await exportGguf(source, out, { dtype: target });
      return { bytes: r.bytes };
    }
    const r = await quantizeGguf(source, out, {
      to: target as GgufTarget,
      method: 'rtn',
      exclude: [],
      quantizeEmbeddings: false,
      fallback: true,
      threads,
    });
    return { bytes: r.bytes };
  });
}

/** llama-quantize F32.gguf -> out, with /usr/bin/time's elapsed seconds and maximum resident set. */
function llamaQuantize(f32: string, out: string, target: string, threads: number): { seconds: number; peakRssMiB: number } {
  const report = join(tmpdir(), `llmopt-bench-gguf-time-${process.pid}.txt`);
  execFileSync('/usr/bin/time', ['-f', '%e %M', '-o', report, QUANTIZE, f32, out, target.toUpperCase(), String(threads)], {
    stdio: 'ignore',
  });
  const [seconds, kib] = execFileSync('cat', [report], { encoding: 'utf8' }).trim().split(/\s+/).map(Number);
  rmSync(report, { force: true });
  return { seconds: seconds!, peakRssMiB: kib! / 1024 };
}

/** Tensors whose type, shape or bytes differ between two GGUF files (one tensor in memory at a time). */
async function differingTensors(a: string, b: string): Promise<number> {
  const fa = readGgufHeader(a);
  const fb = readGgufHeader(b);
  const byName = new Map(fb.tensors.map((t) => [t.name, t]));
  let n = 0;
  for (const t of fa.tensors) {
    const u = byName.get(t.name);
    const same =
      u !== undefined &&
      u.type === t.type &&
      Buffer.compare(Buffer.from(await readGgufTensor(fa, t)), Buffer.from(await readGgufTensor(fb, u))) === 0;
    if (!same) n++;
  }
  return n + Math.max(0, fb.tensors.length - fa.tensors.length);
}

async function main(): Promise<void> {
  if (!existsSync(QUANTIZE)) throw new Error(`${QUANTIZE}: llama.cpp is absent; the benchmark compares against llama-quantize`);
  const smoke = args.includes('--smoke');
  const reps = flag('reps', 3);
  const threads = flag('threads', availableParallelism());
  const spec = smoke ? SMOKE : SYNTHETIC;
  const work = mkdtempSync(join(tmpdir(), 'llmopt-bench-gguf-'));
  try {
    log(`writing synthetic checkpoint (${spec.name}) ...`);
    await writeSyntheticLlama(work, spec);
    const source = join(work, spec.name);
    const f32 = join(work, 'llmopt-f32.gguf');
    log('llmopt: F32 GGUF (llama-quantize input) ...');
    const f32Write = runChild(import.meta.url, 'write', source, f32, 'f32', String(threads));
    const runs: Record<
      string,
      { llmopt: Array<{ seconds: number; peakRssMiB: number }>; llamacpp: Array<{ seconds: number; peakRssMiB: number }> }
    > = {};
    const files: Record<string, { llmoptBytes: number; differingTensors: number; tensors: number }> = {};
    for (const t of TARGETS) runs[t] = { llmopt: [], llamacpp: [] };
    for (let rep = 0; rep < reps; rep++) {
      for (const t of TARGETS) {
        const ours = join(work, `llmopt-${t}.gguf`);
        const theirs = join(work, `llama-quantize-${t}.gguf`);
        log(`rep ${rep + 1}/${reps} ${t}: llmopt ...`);
        const r = runChild(import.meta.url, 'write', source, ours, t, String(threads));
        runs[t]!.llmopt.push({ seconds: r.seconds, peakRssMiB: r.peakRssMiB });
        log(`rep ${rep + 1}/${reps} ${t}: llama-quantize ...`);
        runs[t]!.llamacpp.push(llamaQuantize(f32, theirs, t, threads));
        if (rep === 0)
          files[t] = {
            llmoptBytes: r.bytes,
            differingTensors: await differingTensors(ours, theirs),
            tensors: readGgufHeader(ours).tensors.length,
          };
        rmSync(ours, { force: true });
        rmSync(theirs, { force: true });
      }
    }
    const parameters = readGgufHeader(f32).tensors.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
    const largest = Math.max(...readGgufHeader(f32).tensors.map((t) => t.bytes));
    const report = {
      machine: machine(),
      smoke,
      settings: { reps, threads, model: spec.name, parameters, largestTensorMiB: largest / MiB },
      f32Write,
      targets: TARGETS.map((t) => ({
        target: t,
        ...files[t]!,
        llmoptSeconds: stats(runs[t]!.llmopt.map((x) => x.seconds)),
        llmoptPeakRssMiB: stats(runs[t]!.llmopt.map((x) => x.peakRssMiB)),
        llamaQuantizeSeconds: stats(runs[t]!.llamacpp.map((x) => x.seconds)),
        llamaQuantizePeakRssMiB: stats(runs[t]!.llamacpp.map((x) => x.peakRssMiB)),
      })),
    };
    const out = textFlag('json');
    if (out) writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
    console.log(describeMachine(report.machine));
    console.log(
      `model: ${spec.name}, ${(parameters / 1e6).toFixed(1)}M parameters (float32 safetensors), largest tensor ${(largest / MiB).toFixed(1)} MiB; ` +
        `llmopt F32 GGUF ${f32Write.seconds.toFixed(1)} s, peak RSS ${f32Write.peakRssMiB.toFixed(0)} MiB`,
    );
    console.log(
      formatTable([
        [
          'target',
          'file MiB',
          'tensors != llama-quantize',
          'llmopt s',
          'llama-quantize s',
          'ratio',
          'llmopt peak RSS MiB',
          'llama-quantize peak RSS MiB',
        ],
        ...report.targets.map((t) => [
          t.target,
          (t.llmoptBytes / MiB).toFixed(1),
          `${t.differingTensors} of ${t.tensors}`,
          formatStats(t.llmoptSeconds),
          formatStats(t.llamaQuantizeSeconds),
          (t.llmoptSeconds.median / t.llamaQuantizeSeconds.median).toFixed(2),
          formatStats(t.llmoptPeakRssMiB, 0),
          formatStats(t.llamaQuantizePeakRssMiB, 0),
        ]),
      ]),
    );
    console.log(
      `${reps} repetitions interleaved, median (min-max); ${threads} thread(s) on both sides; llmopt reads the Hugging Face folder, ` +
        `llama-quantize llmopt's F32 GGUF, mmap (its RSS counts the mapped input pages it touched)`,
    );
  } finally {
    if (!args.includes('--keep')) rmSync(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  }
}

if (args[0] === '--child') await childWrite(args[2]!, args[3]!, args[4]!, Number(args[5]));
else await main();
