// Runtime benchmark (`npm run bench:runtime`): on a synthetic checkpoint of realistic width (generated,
// not committed), export time and peak RSS, batch-1 prefill and decode tokens/s for fused against
// standard and inplace attention (and the shared-buffer KV cache against the copying one), measured alternately
// in one process, several repetitions, median and spread; and RSS over a long decode loop.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportModel } from '../src/passes/export.js';
import { DecoderModel, type CacheKind } from '../src/runtime/decoder.js';
import { argmax } from '../src/runtime/sampling.js';
import type { AttentionForm } from '../src/core/io.js';
import {
  SYNTHETIC,
  args,
  describeMachine,
  describeModel,
  flag,
  formatStats,
  log,
  machine,
  maxRssMiB,
  prompt,
  reportJob,
  rssMiB,
  runChild,
  stats,
  textFlag,
  timeRun,
  withSyntheticCheckpoint,
} from './bench/common.js';

/** Child: one export, reporting its own peak RSS. */
async function childExport(source: string, out: string, form: AttentionForm): Promise<void> {
  await reportJob(async () => ({ dataBytes: (await exportModel(source, out, { attention: form, layout: 'llmopt' })).dataBytes }));
}

/** Child: a long greedy decode loop on one cache kind, sampling RSS along the way. */
async function childMemory(artifact: string, kind: CacheKind, steps: number): Promise<void> {
  const model = await DecoderModel.open(artifact, { device: 'cpu' });
  const ids = prompt(16);
  const cache = model.createCache(1, ids.length + steps, { kind });
  let logits = await model.forward(cache, [ids]);
  let next = argmax(logits.at(0, ids.length - 1));
  const samples: Record<number, number> = {};
  for (let step = 1; step <= steps; step++) {
    logits = await model.forward(cache, [[next]]);
    next = argmax(logits.at(0, 0));
    if ([10, 100, 250, 500, 750, 1000, 1500, steps].includes(step)) {
      // Collect JS garbage first, so the figure shows what is held, not what awaits collection.
      (globalThis as { gc?: () => void }).gc?.();
      samples[step] = rssMiB();
    }
  }
  process.stdout.write(JSON.stringify({ samples, peakRssMiB: maxRssMiB() }));
}

async function main(): Promise<void> {
  const reps = flag('reps', 5);
  const promptLen = flag('prompt-len', 128);
  const genLen = flag('gen-len', 128);
  const longSteps = flag('long-steps', 1000);
  await withSyntheticCheckpoint(async (work, source) => {
    const exports: Record<string, any> = {};
    for (const form of ['fused', 'standard', 'inplace'] as const) {
      log(`export ${form} ...`);
      exports[form] = runChild(import.meta.url, 'export', source, join(work, form), form);
    }

    log(`speed: ${reps} repetitions, prompt ${promptLen}, generate ${genLen}, alternating ...`);
    const variants: Array<{ label: string; form: AttentionForm; kind: CacheKind }> = [
      { label: 'fused (GroupQueryAttention, shared KV buffer)', form: 'fused', kind: 'shared' },
      { label: 'fused (GroupQueryAttention, KV copied per step)', form: 'fused', kind: 'concat' },
      { label: 'standard (ai.onnx ops, KV copied per step)', form: 'standard', kind: 'concat' },
      { label: 'inplace (cache read where it lies, new entries out)', form: 'inplace', kind: 'inplace' },
    ];
    const models: Record<AttentionForm, DecoderModel> = {
      fused: await DecoderModel.open(join(work, 'fused'), { device: 'cpu' }),
      standard: await DecoderModel.open(join(work, 'standard'), { device: 'cpu' }),
      inplace: await DecoderModel.open(join(work, 'inplace'), { device: 'cpu' }),
    };
    for (const v of variants) await timeRun(models[v.form], promptLen, 8, 1, v.kind); // warm-up, not counted
    const runs = variants.map(() => ({ prefill: [] as number[], decode: [] as number[] }));
    for (let r = 0; r < reps; r++) {
      for (let i = 0; i < variants.length; i++) {
        const m = await timeRun(models[variants[i]!.form], promptLen, genLen, 1, variants[i]!.kind);
        runs[i]!.prefill.push(m.prefill);
        runs[i]!.decode.push(m.decode);
      }
    }
    for (const m of Object.values(models)) await m.release();

    log(`memory: ${longSteps} decode steps per cache kind ...`);
    const memory = {
      shared: runChild(import.meta.url, 'memory', join(work, 'fused'), 'shared', String(longSteps)),
      concat: runChild(import.meta.url, 'memory', join(work, 'standard'), 'concat', String(longSteps)),
      inplace: runChild(import.meta.url, 'memory', join(work, 'inplace'), 'inplace', String(longSteps)),
    };
    const c = SYNTHETIC.config;
    const kvBytesPerToken = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size / c.num_attention_heads) * 4;

    const report = {
      machine: machine(),
      model: { ...SYNTHETIC.config, parameters: exports.fused.dataBytes / 4, kvBytesPerToken },
      export: exports,
      speed: variants.map((v, i) => ({
        variant: v.label,
        prefillTokensPerSecond: stats(runs[i]!.prefill),
        decodeTokensPerSecond: stats(runs[i]!.decode),
      })),
      ratios: {
        prefillFusedOverStandard: stats(runs[0]!.prefill.map((x, i) => x / runs[2]!.prefill[i]!)),
        decodeFusedOverStandard: stats(runs[0]!.decode.map((x, i) => x / runs[2]!.decode[i]!)),
        decodeSharedOverCopiedKv: stats(runs[0]!.decode.map((x, i) => x / runs[1]!.decode[i]!)),
        decodeInplaceOverFused: stats(runs[3]!.decode.map((x, i) => x / runs[0]!.decode[i]!)),
      },
      memory,
      settings: { reps, promptLen, genLen, longSteps, batch: 1, threads: 'onnxruntime default (all cores)' },
    };
    const out = textFlag('json');
    if (out) writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
    const f = formatStats;
    console.log(describeMachine(report.machine));
    console.log(describeModel(report.model.parameters));
    for (const form of ['fused', 'standard', 'inplace'])
      console.log(
        `export ${form}: ${exports[form].seconds.toFixed(1)} s, peak RSS ${exports[form].peakRssMiB.toFixed(0)} MiB (weights ${(exports[form].dataBytes / 2 ** 20).toFixed(0)} MiB)`,
      );
    console.log(`batch 1, prompt ${promptLen}, generate ${genLen}, ${reps} reps: median (min-max) tokens/s`);
    for (const s of report.speed)
      console.log(`  ${s.variant}: prefill ${f(s.prefillTokensPerSecond)}, decode ${f(s.decodeTokensPerSecond)}`);
    console.log(
      `ratios (same run): prefill fused/standard ${f(report.ratios.prefillFusedOverStandard, 2)}, decode fused/standard ${f(report.ratios.decodeFusedOverStandard, 2)}, decode shared/copied KV ${f(report.ratios.decodeSharedOverCopiedKv, 2)}, decode inplace/fused ${f(report.ratios.decodeInplaceOverFused, 2)}`,
    );
    for (const [kind, m] of Object.entries(memory))
      console.log(
        `RSS over ${longSteps} decode steps, ${kind} KV: ${Object.entries(m.samples as Record<string, number>)
          .map(([k, v]) => `${k}: ${v.toFixed(0)}`)
          .join(', ')} MiB (KV grows ${(kvBytesPerToken / 1024).toFixed(0)} KiB/token)`,
      );
  });
}

if (args[0] === '--child') {
  if (args[1] === 'export') await childExport(args[2]!, args[3]!, args[4] as AttentionForm);
  else await childMemory(args[2]!, args[3] as CacheKind, Number(args[4]));
} else {
  await main();
}
