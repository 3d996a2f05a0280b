// Sliding-window cache benchmark (`npm run bench:window`): KV cache bytes and batch-1 decode tokens/s at a context of
// 4x the window, llmopt's trimmed sliding-layer caches against whole ones (the transformers.js layout's graph, which
// takes whole caches), on gemma3-tiny (../shared) and a random checkpoint in Gemma-3-270M's shape (`synth --arch`).
// Both models are decoded in one process, interleaved (several repetitions, median and range).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportModel } from '../src/passes/export.js';
import { writeSyntheticFolder } from '../src/model/synthetic.js';
import { synthSpec } from '../src/model/synthetic-shapes.js';
import { layerWindow } from '../src/core/spec.js';
import type { AttentionForm } from '../src/core/io.js';
import { DecoderModel } from '../src/runtime/decoder.js';
import type { KvCache } from '../src/runtime/kv-cache.js';
import { argmax } from '../src/runtime/sampling.js';
import { args, describeMachine, flag, formatStats, formatTable, log, machine, stats, textFlag } from './bench/common.js';

const MiB = 2 ** 20;
const reps = flag('--reps', 3);
const steps = flag('--steps', 8);
const form = (textFlag('--attention') ?? 'fused') as AttentionForm;

/** Bytes of the cache tensors, split by layers that slide and those that attend to the whole context. */
function cacheBytes(model: DecoderModel, cache: KvCache): { local: number; global: number } {
  const out = { local: 0, global: 0 };
  for (const [name, t] of cache.held()) {
    const bytes = (t.data as Float32Array).byteLength;
    if (layerWindow(model.spec, Number(name.split('.')[1])) !== null) out.local += bytes;
    else out.global += bytes;
  }
  return out;
}

interface Run {
  model: DecoderModel;
  cache: KvCache;
  next: number;
  tokPerS: number[];
}

async function measure(label: string, source: string, work: string): Promise<string[][]> {
  const trimmedDir = join(work, `${label}-trimmed`);
  const wholeDir = join(work, `${label}-whole`);
  log(`${label}: exporting (${form}) ...`);
  await exportModel(source, trimmedDir, { attention: form, layout: 'llmopt' });
  await exportModel(source, wholeDir, { attention: form, layout: 'transformers.js' });
  const runs: Run[] = [];
  let context = 0;
  for (const dir of [trimmedDir, wholeDir]) {
    const model = await DecoderModel.open(dir, { device: 'cpu' });
    const W = model.spec.slidingWindow!;
    context = 4 * W;
    const ids = Array.from({ length: context }, (_, i) => 3 + ((i * 7919) % (model.spec.vocabSize - 3)));
    const cache = model.createCache(1, context + reps * steps + 1);
    log(`${label}: prefill ${context} tokens (${model.windowedCache ? 'trimmed' : 'whole'} caches) ...`);
    const logits = await model.forward(cache, [ids], { logits: 'last' });
    runs.push({ model, cache, next: argmax(logits.at(0, 0)), tokPerS: [] });
  }
  for (let r = 0; r < reps; r++) {
    for (const run of runs) {
      const t0 = performance.now();
      for (let s = 0; s < steps; s++) run.next = argmax((await run.model.forward(run.cache, [[run.next]])).at(0, 0));
      run.tokPerS.push(steps / ((performance.now() - t0) / 1000));
    }
  }
  const [trimmed, whole] = runs.map((run) => ({ ...cacheBytes(run.model, run.cache), speed: stats(run.tokPerS) }));
  for (const run of runs) await run.model.release();
  const total = (b: { local: number; global: number }) => b.local + b.global;
  return [
    [
      label,
      String(context),
      `${(total(whole!) / MiB).toFixed(2)} (${(whole!.local / MiB).toFixed(2)} local)`,
      `${(total(trimmed!) / MiB).toFixed(2)} (${(trimmed!.local / MiB).toFixed(2)} local)`,
      (total(trimmed!) / total(whole!)).toFixed(3),
      formatStats(whole!.speed),
      formatStats(trimmed!.speed),
    ],
  ];
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'llmopt-bench-window-'));
  try {
    const rows: string[][] = [];
    const tiny = join(import.meta.dirname, '..', '..', 'shared', 'models', 'gemma3-tiny');
    if (existsSync(tiny)) rows.push(...(await measure('gemma3-tiny', tiny, work)));
    else log(`${tiny} absent: gemma3-tiny skipped`);
    if (!args.includes('--tiny-only')) {
      // Gemma-3-270M's shape with a context of 4,096 (the rotary tables stay small); its window is 512.
      const { spec, options } = synthSpec('gemma-3-270m', {
        hidden: 0,
        layers: 0,
        heads: 1,
        kvHeads: 1,
        vocab: 0,
        context: 4096,
        dtype: 'float32',
        tied: true,
      });
      log('writing the Gemma-3-270M-shaped checkpoint ...');
      const source = join(work, 'gemma-3-270m');
      await writeSyntheticFolder(source, spec, options);
      rows.push(...(await measure('Gemma-3-270M shape', source, work)));
    }
    const m = machine();
    process.stdout.write(`${describeMachine(m)}; ${form} attention, batch 1, ${reps} x ${steps} decode steps interleaved\n`);
    process.stdout.write(
      formatTable([
        ['model', 'context', 'KV MiB, whole caches', 'KV MiB, trimmed', 'ratio', 'decode tok/s, whole', 'decode tok/s, trimmed'],
        ...rows,
      ]),
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
