// Runtime benchmark (`npm run bench:runtime`): on a synthetic checkpoint of realistic width (generated,
// not committed), export time and peak RSS, batch-1 prefill and decode tokens/s for fused against
// standard attention (and the shared-buffer KV cache against the copying one), measured alternately
// in one process, several repetitions, median and spread; and RSS over a long decode loop.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { writeSyntheticLlama, type SyntheticSpec } from '../src/model/synthetic.js';
import { exportModel } from '../src/passes/export.js';
import { DecoderModel, type CacheKind } from '../src/runtime/decoder.js';
import { argmax } from '../src/runtime/sampling.js';
import type { AttentionForm } from '../src/model/decoder.js';

const SELF = fileURLToPath(import.meta.url);
const args = process.argv.slice(2);
function flag(name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}

const SYNTHETIC: SyntheticSpec = {
  name: 'synthetic-768x12',
  shards: 1,
  config: {
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    num_key_value_heads: 4,
    intermediate_size: 2048,
    vocab_size: 32000,
    max_position_embeddings: 2048,
    rope_theta: 10000,
    rope_scaling: null,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: 'float32',
  },
};

const maxRssMiB = () => process.resourceUsage().maxRSS / 1024;
const rssMiB = () => process.memoryUsage().rss / 2 ** 20;

function prompt(length: number): number[] {
  return Array.from({ length }, (_, i) => 3 + ((i * 7919) % 31000));
}

/** Child: one export, reporting its own peak RSS. */
async function childExport(source: string, out: string, form: AttentionForm): Promise<void> {
  const t0 = performance.now();
  const r = await exportModel(source, out, { attention: form, layout: 'llmopt' });
  process.stdout.write(JSON.stringify({ seconds: (performance.now() - t0) / 1000, dataBytes: r.dataBytes, peakRssMiB: maxRssMiB() }));
}

/** Child: a long greedy decode loop on one cache kind, sampling RSS along the way. */
async function childMemory(artifact: string, kind: CacheKind, steps: number): Promise<void> {
  const model = await DecoderModel.open(artifact, { device: 'cpu' });
  const ids = prompt(16);
  const cache = model.createCache(1, ids.length + steps, kind);
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

function runChild(...childArgs: string[]): any {
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', SELF, '--child', ...childArgs], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`child ${childArgs[0]} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function stats(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { median: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, max: s[s.length - 1]! };
}

async function timeRun(model: DecoderModel, kind: CacheKind, promptLen: number, genLen: number): Promise<{ prefill: number; decode: number }> {
  const ids = prompt(promptLen);
  const cache = model.createCache(1, promptLen + genLen, kind);
  let t0 = performance.now();
  let logits = await model.forward(cache, [ids]);
  const prefill = promptLen / ((performance.now() - t0) / 1000);
  let next = argmax(logits.at(0, promptLen - 1));
  t0 = performance.now();
  for (let i = 0; i < genLen; i++) {
    logits = await model.forward(cache, [[next]]);
    next = argmax(logits.at(0, 0));
  }
  return { prefill, decode: genLen / ((performance.now() - t0) / 1000) };
}

async function main(): Promise<void> {
  const reps = flag('reps', 5);
  const promptLen = flag('prompt-len', 128);
  const genLen = flag('gen-len', 128);
  const longSteps = flag('long-steps', 1000);
  const work = mkdtempSync(join(tmpdir(), 'llmopt-bench-'));
  const log = (s: string) => process.stderr.write(s + '\n');
  try {
    log(`writing synthetic checkpoint (${SYNTHETIC.name}) ...`);
    await writeSyntheticLlama(work, SYNTHETIC);
    const source = join(work, SYNTHETIC.name);

    const exports: Record<string, any> = {};
    for (const form of ['fused', 'standard'] as const) {
      log(`export ${form} ...`);
      exports[form] = runChild('export', source, join(work, form), form);
    }

    log(`speed: ${reps} repetitions, prompt ${promptLen}, generate ${genLen}, alternating ...`);
    const variants: Array<{ label: string; form: AttentionForm; kind: CacheKind }> = [
      { label: 'fused (GroupQueryAttention, shared KV buffer)', form: 'fused', kind: 'shared' },
      { label: 'fused (GroupQueryAttention, KV copied per step)', form: 'fused', kind: 'concat' },
      { label: 'standard (ai.onnx ops, KV copied per step)', form: 'standard', kind: 'concat' },
    ];
    const models = { fused: await DecoderModel.open(join(work, 'fused'), { device: 'cpu' }), standard: await DecoderModel.open(join(work, 'standard'), { device: 'cpu' }) };
    for (const v of variants) await timeRun(models[v.form], v.kind, promptLen, 8); // warm-up, not counted
    const runs = variants.map(() => ({ prefill: [] as number[], decode: [] as number[] }));
    for (let r = 0; r < reps; r++) {
      for (let i = 0; i < variants.length; i++) {
        const m = await timeRun(models[variants[i]!.form], variants[i]!.kind, promptLen, genLen);
        runs[i]!.prefill.push(m.prefill);
        runs[i]!.decode.push(m.decode);
      }
    }
    await models.fused.release();
    await models.standard.release();

    log(`memory: ${longSteps} decode steps per cache kind ...`);
    const memory = {
      shared: runChild('memory', join(work, 'fused'), 'shared', String(longSteps)),
      concat: runChild('memory', join(work, 'standard'), 'concat', String(longSteps)),
    };
    const c = SYNTHETIC.config;
    const kvBytesPerToken = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size / c.num_attention_heads) * 4;

    const report = {
      machine: { cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: +(totalmem() / 2 ** 30).toFixed(1), node: process.version, onnxruntime: ort.env.versions.node },
      model: { ...SYNTHETIC.config, parameters: exports.fused.dataBytes / 4, kvBytesPerToken },
      export: exports,
      speed: variants.map((v, i) => ({ variant: v.label, prefillTokensPerSecond: stats(runs[i]!.prefill), decodeTokensPerSecond: stats(runs[i]!.decode) })),
      ratios: {
        prefillFusedOverStandard: stats(runs[0]!.prefill.map((x, i) => x / runs[2]!.prefill[i]!)),
        decodeFusedOverStandard: stats(runs[0]!.decode.map((x, i) => x / runs[2]!.decode[i]!)),
        decodeSharedOverCopiedKv: stats(runs[0]!.decode.map((x, i) => x / runs[1]!.decode[i]!)),
      },
      memory,
      settings: { reps, promptLen, genLen, longSteps, batch: 1, threads: 'onnxruntime default (all cores)' },
    };
    const out = args.includes('--json') ? args[args.indexOf('--json') + 1]! : null;
    if (out) writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
    const f = (s: { median: number; min: number; max: number }, d = 1) => `${s.median.toFixed(d)} (${s.min.toFixed(d)}-${s.max.toFixed(d)})`;
    console.log(`machine: ${report.machine.cpu}, ${report.machine.cores} cores, ${report.machine.memoryGiB} GiB, node ${report.machine.node}, onnxruntime ${report.machine.onnxruntime}`);
    console.log(`model: hidden ${c.hidden_size}, ${c.num_hidden_layers} layers, heads ${c.num_attention_heads}/${c.num_key_value_heads} kv, ffn ${c.intermediate_size}, vocab ${c.vocab_size}, ${(report.model.parameters / 1e6).toFixed(1)}M parameters (float32)`);
    for (const form of ['fused', 'standard']) console.log(`export ${form}: ${exports[form].seconds.toFixed(1)} s, peak RSS ${exports[form].peakRssMiB.toFixed(0)} MiB (weights ${(exports[form].dataBytes / 2 ** 20).toFixed(0)} MiB)`);
    console.log(`batch 1, prompt ${promptLen}, generate ${genLen}, ${reps} reps: median (min-max) tokens/s`);
    for (const s of report.speed) console.log(`  ${s.variant}: prefill ${f(s.prefillTokensPerSecond)}, decode ${f(s.decodeTokensPerSecond)}`);
    console.log(`ratios (same run): prefill fused/standard ${f(report.ratios.prefillFusedOverStandard, 2)}, decode fused/standard ${f(report.ratios.decodeFusedOverStandard, 2)}, decode shared/copied KV ${f(report.ratios.decodeSharedOverCopiedKv, 2)}`);
    for (const [kind, m] of Object.entries(memory)) console.log(`RSS over ${longSteps} decode steps, ${kind} KV: ${Object.entries(m.samples as Record<string, number>).map(([k, v]) => `${k}: ${v.toFixed(0)}`).join(', ')} MiB (KV grows ${(kvBytesPerToken / 1024).toFixed(0)} KiB/token)`);
  } finally {
    if (!args.includes('--keep')) rmSync(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  }
}

if (args[0] === '--child') {
  if (args[1] === 'export') await childExport(args[2]!, args[3]!, args[4] as AttentionForm);
  else await childMemory(args[2]!, args[3] as CacheKind, Number(args[4]));
} else {
  await main();
}
