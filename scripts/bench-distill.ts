// Distillation benchmark (`npm run bench:distill`): training tokens/s and peak RSS of the distillation
// loop (training graph + AdamW) on aidreams-260k (when ../shared is present) and on the synthetic ~110M
// checkpoint, a few steps each in its own process, steady-state steps timed after the first.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { distill } from '../src/passes/distill/distill.js';
import {
  args,
  describeMachine,
  flag,
  formatTable,
  log,
  machine,
  reportJob,
  runChild,
  textFlag,
  withSyntheticCheckpoint,
} from './bench/common.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const AIDREAMS = join(ROOT, '..', 'shared', 'models', 'aidreams-260k');
const TRAIN = join(ROOT, '..', 'shared', 'data', 'dreams-train.txt');
const SAMPLE = join(ROOT, 'fixtures', 'text', 'sample.txt');

/** Child: `steps` distillation steps of a 2-layer student of `teacher` (training time excludes setup and eval). */
async function child(teacher: string, data: string, out: string, steps: number, batch: number, seqLen: number): Promise<void> {
  await reportJob(async () => {
    const r = await distill(out, {
      teacher,
      studentLayers: 2,
      data,
      steps,
      batch,
      seqLen,
      lr: 1e-4,
      temperature: 2,
      alpha: 0.1,
      seed: 0,
      keepSparsity: false,
      device: 'cpu',
    });
    return { steps: r.steps, tokens: r.tokens, trainSeconds: r.seconds, tokensPerSecond: r.tokensPerSecond };
  });
}

async function main(): Promise<void> {
  const steps = flag('steps', 5);
  const batch = flag('batch', 8);
  const seqLen = flag('seq-len', 128);
  const results: Record<string, any> = {};
  if (existsSync(AIDREAMS)) {
    log('aidreams-260k ...');
    const out = mkdtempSync(join(tmpdir(), 'llmopt-bench-distill-'));
    try {
      results['aidreams-260k'] = runChild(
        import.meta.url,
        AIDREAMS,
        TRAIN,
        join(out, 'student'),
        String(steps * 4),
        String(16),
        String(seqLen),
      );
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  } else log('../shared is absent: skipping aidreams-260k');
  await withSyntheticCheckpoint(async (work, source) => {
    log(`synthetic ~110M, ${steps} steps of ${batch} x ${seqLen} ...`);
    // Enough text for every step to see a full batch: the bundled sample, repeated.
    const data = join(work, 'train.txt');
    writeFileSync(data, readFileSync(SAMPLE, 'utf8').repeat(Math.ceil((steps * batch * seqLen) / 250)));
    results['synthetic ~110M'] = runChild(
      import.meta.url,
      source,
      data,
      join(work, 'student'),
      String(steps),
      String(batch),
      String(seqLen),
    );
  });
  const m = machine();
  console.log(describeMachine(m));
  console.log(
    formatTable([
      ['model (2-layer student)', 'steps', 'tokens', 'train s', 'tokens/s', 'peak RSS MiB'],
      ...Object.entries(results).map(([k, r]) => [
        k,
        String(r.steps),
        String(r.tokens),
        r.trainSeconds.toFixed(1),
        r.tokensPerSecond.toFixed(0),
        r.peakRssMiB.toFixed(0),
      ]),
    ]),
  );
  const out = textFlag('json');
  if (out) writeFileSync(out, `${JSON.stringify({ machine: m, settings: { steps, batch, seqLen }, results }, null, 2)}\n`);
}

if (args[0] === '--child') await child(args[1]!, args[2]!, args[3]!, Number(args[4]), Number(args[5]), Number(args[6]));
else await main();
