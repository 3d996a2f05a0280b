// Architecture benchmark (`npm run bench:arch`): random-weight checkpoints in the shapes of Qwen3-0.6B and Gemma-3-270M
// (`llmopt synth --arch`), each written and exported in its own child process (export peak RSS beside the largest
// tensor's bytes: export streams, so the peak should sit near that tensor plus the graph), then batch-1 decode
// tokens/s through `llmopt bench`'s library, the models' repetitions interleaved, median and range.
// --smoke runs the same steps on tiny qwen3 / gemma3 shapes (seconds), to check the script without the real run.
import { mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBench } from '../src/bench/bench.js';
import { expectedTensors, parameterCount } from '../src/core/spec.js';
import { specFromConfig } from '../src/model/architectures/index.js';
import { syntheticConfigJson, writeSyntheticFolder } from '../src/model/synthetic.js';
import { NAMED_SHAPES, synthSpec, type SynthArch, type SynthKnobs } from '../src/model/synthetic-shapes.js';
import { exportModel } from '../src/passes/export.js';
import { GREEDY } from '../src/runtime/sampling.js';
import { args, describeMachine, flag, formatStats, formatTable, log, machine, reportJob, runChild, textFlag } from './bench/common.js';

interface Case {
  label: string;
  arch: SynthArch;
  knobs: SynthKnobs;
}

const BASE: SynthKnobs = { hidden: 768, layers: 12, heads: 12, kvHeads: 4, vocab: 32000, context: 2048, dtype: 'float32', tied: false };

const REAL: Case[] = [
  { label: 'Qwen3-0.6B shape', arch: 'qwen3-0.6b', knobs: { ...BASE, context: NAMED_SHAPES['qwen3-0.6b'].context } },
  { label: 'Gemma-3-270M shape', arch: 'gemma-3-270m', knobs: { ...BASE, context: NAMED_SHAPES['gemma-3-270m'].context } },
];

// Tiny shapes of the same architectures; gemma3's window of 16 is shorter than the prompt, so sliding layers slide.
const TINY = { layers: 2, heads: 2, kvHeads: 1, headDim: 32, ffn: 128, vocab: 512, context: 2048, dtype: 'float32', tied: true } as const;
const SMOKE: Case[] = [
  { label: 'qwen3 smoke', arch: 'qwen3', knobs: { ...TINY, hidden: 64 } },
  { label: 'gemma3 smoke', arch: 'gemma3', knobs: { ...TINY, hidden: 64, layers: 6, slidingWindow: 16 } },
];

const MiB = 2 ** 20;

/** Parameters and the largest tensor's bytes of a case, from the config it writes (nothing written yet). */
function shapeOf(c: Case): { parameters: number; largestTensor: { name: string; bytes: number }; weightBytes: number } {
  const { spec } = synthSpec(c.arch, c.knobs);
  const decoder = specFromConfig(syntheticConfigJson(spec), `${c.label}/config.json`);
  const bytesPer = c.knobs.dtype === 'float32' ? 4 : 2;
  let largest = { name: '', bytes: 0 };
  for (const [name, shape] of expectedTensors(decoder)) {
    const bytes = shape.reduce((a, b) => a * b, 1) * bytesPer;
    if (bytes > largest.bytes) largest = { name, bytes };
  }
  const parameters = parameterCount(decoder);
  return { parameters, largestTensor: largest, weightBytes: parameters * bytesPer };
}

/** Child: `llmopt synth --arch` into `target`, reporting its peak RSS (the writer holds one tensor at a time). */
async function childSynth(arch: SynthArch, knobs: string, target: string): Promise<void> {
  await reportJob(async () => {
    const { spec, options } = synthSpec(arch, JSON.parse(knobs) as SynthKnobs);
    await writeSyntheticFolder(target, spec, options);
    return {};
  });
}

/** Child: one export (fused attention, llmopt layout, as `llmopt export` by default), reporting its peak RSS. */
async function childExport(source: string, out: string): Promise<void> {
  await reportJob(async () => {
    const r = await exportModel(source, out, { attention: 'fused', layout: 'llmopt' });
    return { graphBytes: r.modelBytes, dataBytes: r.dataBytes };
  });
}

async function main(): Promise<void> {
  const smoke = args.includes('--smoke');
  const reps = flag('reps', 3);
  const promptLen = flag('prompt-len', 128);
  const genLen = flag('gen-len', 32);
  const threadsFlag = textFlag('threads');
  const cases = smoke ? SMOKE : REAL;
  const shapes = cases.map(shapeOf);

  const work = mkdtempSync(join(tmpdir(), 'llmopt-bench-arch-'));
  try {
    // Each case's checkpoint and exported weights lie on disk together: twice the weights, plus the tied lm_head the
    // export writes beside the embedding (the largest tensor).
    const needed = shapes.reduce((a, s) => a + 2 * s.weightBytes + s.largestTensor.bytes, 0) + 256 * MiB;
    const { bavail, bsize } = statfsSync(work);
    const free = Number(bavail) * Number(bsize);
    if (free < needed)
      throw new Error(`${work}: ${(free / 2 ** 30).toFixed(1)} GiB free, the run needs about ${(needed / 2 ** 30).toFixed(1)} GiB`);
    log(`work folder ${work}: ${(free / 2 ** 30).toFixed(1)} GiB free, about ${(needed / 2 ** 30).toFixed(1)} GiB needed`);

    const models = cases.map((c, i) => {
      const source = join(work, `${c.arch}-checkpoint`);
      const artifact = join(work, `${c.arch}-onnx`);
      log(`${c.label}: synth --arch ${c.arch} (${(shapes[i]!.parameters / 1e6).toFixed(1)}M parameters) ...`);
      const synth = runChild(import.meta.url, 'synth', c.arch, JSON.stringify(c.knobs), source);
      log(`${c.label}: export ...`);
      const exported = runChild(import.meta.url, 'export', source, artifact);
      return { ...c, ...shapes[i]!, artifact, synth, export: exported };
    });

    log(`decode: batch 1, prompt ${promptLen}, generate ${genLen}, ${reps} repetitions, the models interleaved ...`);
    const bench = await runBench({
      artifacts: models.map((m) => m.artifact),
      batches: [1],
      promptLen,
      genLen,
      reps,
      draftTokens: 0,
      sampling: GREEDY,
      device: 'cpu',
      threads: threadsFlag === null ? undefined : Number(threadsFlag),
      onProgress: log,
    });

    const report = {
      machine: machine(),
      smoke,
      settings: { reps, promptLen, genLen, batch: 1, dtype: 'float32', attention: 'fused', threads: threadsFlag ?? 'onnxruntime default' },
      // runBench's peak RSS: the bench process with every model open at once (not one model alone).
      benchPeakRssMiB: Math.max(...bench.batching.map((b) => b.peakRssMiB)),
      models: models.map((m) => {
        const b = bench.batching.find((x) => x.artifact === m.artifact)!;
        return {
          label: m.label,
          arch: m.arch,
          parameters: m.parameters,
          largestTensor: m.largestTensor,
          synth: m.synth,
          export: m.export,
          decodeTokensPerSecond: b.decodeTokensPerSecond,
          prefillTokensPerSecond: b.prefillTokensPerSecond,
          interTokenLatencyMs: b.interTokenLatencyMs,
        };
      }),
    };
    const out = textFlag('json');
    if (out) writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);

    console.log(describeMachine(report.machine));
    console.log(
      formatTable([
        [
          smoke ? 'model (smoke shapes)' : 'model (random weights, float32)',
          'parameters',
          'largest tensor MiB',
          'synth s / peak RSS MiB',
          'export s',
          'export peak RSS MiB',
          'graph MiB',
          'weights MiB',
          `decode tok/s (batch 1, ${reps} reps)`,
        ],
        ...report.models.map((m) => [
          m.label,
          m.parameters.toLocaleString('en-US'),
          `${(m.largestTensor.bytes / MiB).toFixed(1)} (${m.largestTensor.name})`,
          `${m.synth.seconds.toFixed(1)} / ${m.synth.peakRssMiB.toFixed(0)}`,
          m.export.seconds.toFixed(1),
          m.export.peakRssMiB.toFixed(0),
          (m.export.graphBytes / MiB).toFixed(1),
          (m.export.dataBytes / MiB).toFixed(1),
          formatStats(m.decodeTokensPerSecond),
        ]),
      ]),
    );
    console.log(
      `prompt ${promptLen}, generate ${genLen}, greedy; median (min-max); prefill tok/s: ` +
        report.models.map((m) => `${m.label} ${formatStats(m.prefillTokensPerSecond)}`).join(', ') +
        `; decode process peak RSS ${report.benchPeakRssMiB.toFixed(0)} MiB (all models open)`,
    );
  } finally {
    if (!args.includes('--keep')) rmSync(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  }
}

if (args[0] === '--child') {
  if (args[1] === 'synth') await childSynth(args[2] as SynthArch, args[3]!, args[4]!);
  else await childExport(args[2]!, args[3]!);
} else {
  await main();
}
