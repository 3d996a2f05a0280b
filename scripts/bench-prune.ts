// Pruning benchmark (`npm run bench:prune`): on the synthetic ~110M checkpoint, calibration plus pruning
// time, peak RSS and calibration tokens for magnitude, Wanda and SparseGPT, each method in its own
// process, calibrating on 64 sequences of 128 tokens of generated text.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Checkpoint } from '../src/formats/safetensors.js';
import { loadTokenizer, type TextTokenizer } from '../src/formats/tokenizer.js';
import { loadCalibration } from '../src/passes/calibration.js';
import { parseSparsity, prune, type PruneMethod } from '../src/passes/prune/prune.js';
import { seededRandom } from '../src/runtime/sampling.js';
import {
  SYNTHETIC,
  args,
  describeMachine,
  describeModel,
  flag,
  formatTable,
  log,
  machine,
  reportJob,
  runChild,
  textFlag,
  withSyntheticCheckpoint,
} from './bench/common.js';

const RUNS: Record<string, { method: PruneMethod; sparsity: string }> = {
  'magnitude-2:4': { method: 'magnitude', sparsity: '2:4' },
  'wanda-2:4': { method: 'wanda', sparsity: '2:4' },
  'sparsegpt-2:4': { method: 'sparsegpt', sparsity: '2:4' },
  'sparsegpt-0.5': { method: 'sparsegpt', sparsity: '0.5' },
};

const SAMPLE_TEXT = fileURLToPath(new URL('../fixtures/text/sample.txt', import.meta.url));

/**
 * Calibration text of at least `tokens` tokens: sentences of 6 to 14 words drawn with a fixed seed from
 * the bundled sample's words, so every run calibrates on the same text. One line, one stream: the
 * Wanda and SparseGPT reference code likewise cut fixed-length windows from a concatenated corpus, and
 * a single document yields only full windows (each document's tail would be a short one).
 */
function calibrationText(tokenizer: TextTokenizer, tokens: number, seed = 0): string {
  const words = [
    ...new Set(
      readFileSync(SAMPLE_TEXT, 'utf8')
        .toLowerCase()
        .match(/[a-z]+/g)!,
    ),
  ];
  const random = seededRandom(seed);
  const sentences: string[] = [];
  let count = 0;
  // Per-sentence counts add up to about the whole text's; the margin covers the difference.
  while (count < tokens * 1.05) {
    const length = 6 + Math.floor(random() * 9);
    const picked = Array.from({ length }, () => words[Math.floor(random() * words.length)]!);
    const sentence = `${picked[0]![0]!.toUpperCase()}${picked.join(' ').slice(1)}.`;
    sentences.push(sentence);
    count += tokenizer.encode(sentence, false).length;
  }
  return `${sentences.join(' ')}\n`;
}

/** Child: one prune, timed, with its own peak RSS. */
async function childPrune(source: string, out: string, run: string, calib: string, samples: number, seqLen: number): Promise<void> {
  const { method, sparsity } = RUNS[run]!;
  await reportJob(async () => {
    const r = await prune(source, out, { method, structure: parseSparsity(sparsity), calib, calibSamples: samples, calibSeqLen: seqLen });
    return { calibrationTokens: r.calibrationTokens, zeros: r.sparsity };
  });
}

async function main(): Promise<void> {
  const samples = flag('samples', 64);
  const seqLen = flag('seq-len', 128);
  const keys = (textFlag('methods') ?? Object.keys(RUNS).join(',')).split(',');
  const unknown = keys.filter((k) => !RUNS[k]);
  if (unknown.length) throw new Error(`--methods: unknown ${unknown.join(', ')}; choose from ${Object.keys(RUNS).join(', ')}`);

  await withSyntheticCheckpoint(async (work, source) => {
    const calib = join(work, 'calibration.txt');
    const tokenizer = loadTokenizer(source);
    writeFileSync(calib, calibrationText(tokenizer, samples * seqLen + 1));
    // Checked through the loader prune itself uses: the figures must be for full windows.
    const windows = loadCalibration(calib, tokenizer, samples, seqLen).windows;
    if (windows.length < samples || windows.some((w) => w.length !== seqLen))
      throw new Error(`calibration text gives ${windows.length} windows, not ${samples} of ${seqLen} tokens`);

    const results = keys.map((key) => {
      log(`prune ${key} ...`);
      const out = join(work, 'pruned');
      const job = runChild(import.meta.url, 'prune', source, out, key, calib, String(samples), String(seqLen));
      rmSync(out, { recursive: true, force: true }); // 476 MiB each; only the figures are kept
      return { run: key, ...RUNS[key]!, ...(job as { seconds: number; calibrationTokens: number; zeros: number; peakRssMiB: number }) };
    });

    const checkpoint = await Checkpoint.open(source);
    const report = {
      machine: machine(),
      model: { ...SYNTHETIC.config, parameters: checkpoint.totalBytes / 4 },
      settings: {
        calibrationSamples: samples,
        calibrationSeqLen: seqLen,
        calibrationText: 'seeded sentences from fixtures/text/sample.txt words, one stream',
        batchSize: 8,
        sequential: true,
      },
      results,
    };
    await checkpoint.close();
    const out = textFlag('json');
    if (out) writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);

    console.log(describeMachine(report.machine));
    console.log(describeModel(report.model.parameters));
    console.log(`\nprune, each method in its own process; calibration ${samples} x ${seqLen} tokens (wanda, sparsegpt):`);
    console.log(
      formatTable([
        ['method', 'sparsity', 'time s', 'peak RSS MiB', 'calib tokens', 'zeros'],
        ...results.map((r) => [
          r.method,
          r.sparsity,
          r.seconds.toFixed(1),
          r.peakRssMiB.toFixed(0),
          String(r.calibrationTokens),
          r.zeros.toFixed(3),
        ]),
      ]),
    );
  });
}

if (args[0] === '--child') await childPrune(args[2]!, args[3]!, args[4]!, args[5]!, Number(args[6]), Number(args[7]));
else await main();
