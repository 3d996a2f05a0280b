// Where a batch-1 decode step's time goes (`npm run profile:decode`): the synthetic 768 x 12 checkpoint quantized
// by `llmopt quantize --to int4` (the CPU defaults) or exported (--precision f32), decoded after a 128-token prompt
// with onnxruntime's profiler on; each op kind's share of the step next to the weight bytes it reads per token and
// the GB/s that implies. Needs `npm run build`. Shares are from one run; the machine may be shared.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeModel } from '../src/formats/onnx/graph.js';
import { readOnnxInitializers } from '../src/formats/onnx/initializers.js';
import { DecoderModel } from '../src/runtime/decoder.js';
import type { OpenOptions } from '../src/runtime/model.js';
import { argmax } from '../src/runtime/sampling.js';
import type { SessionOptions } from '../src/runtime/session.js';
import { describeMachine, flag, formatTable, log, machine, prompt, textFlag, withSyntheticCheckpoint } from './bench/common.js';

const CLI = join(import.meta.dirname, '..', 'bin', 'llmopt.js');

interface TraceEvent {
  cat: string;
  name: string;
  ts: number;
  dur: number;
  args?: { op_name?: string };
}

const precision = textFlag('precision') ?? 'int4';
const steps = flag('steps', 32);
const threads = flag('threads', 0) || undefined;
const command = precision === 'f32' ? ['export'] : ['quantize', '--to', precision];
// --artifact <dir>: profile that artifact (written the same way, e.g. kept by bench:peers --keep) instead of writing one.
const given = textFlag('artifact');
if (given) {
  const work = mkdtempSync(join(tmpdir(), 'llmopt-profile-'));
  try {
    await profile(work, given);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
} else {
  await withSyntheticCheckpoint(async (work, source) => {
    const out = join(work, precision);
    log(`llmopt ${command.join(' ')} (defaults) ...`);
    execFileSync(process.execPath, [CLI, ...command, source, '-o', out, '--quiet'], { stdio: ['ignore', 'ignore', 'inherit'] });
    await profile(work, out);
  });
}

/** Decodes `steps` tokens of `out` with the profiler on (trace file under `work`) and prints the table. */
async function profile(work: string, out: string): Promise<void> {
  // Weight bytes each node reads per step: its initializers (GatherBlockQuantized/Gather/RotaryEmbedding read rows: not counted).
  const sizes = new Map((await readOnnxInitializers(join(out, 'model.onnx'))).map((t) => [t.name, t.byteLength]));
  const nodes = decodeModel(readFileSync(join(out, 'model.onnx'))).graph!.node!;
  // A Concat of initializers (packed q/k/v and gate/up weights) is folded into one constant when onnxruntime loads
  // the graph: its output counts as an initializer of the node that reads it.
  for (const n of nodes) {
    if (n.opType !== 'Concat' || !n.input!.every((i) => sizes.has(i))) continue;
    sizes.set(
      n.output![0]!,
      n.input!.reduce((sum, i) => sum + sizes.get(i)!, 0),
    );
  }
  const bytesOf = new Map<string, number>();
  for (const n of nodes) {
    if (n.opType === 'Gather' || n.opType === 'GatherBlockQuantized' || n.opType === 'RotaryEmbedding') continue;
    if (n.opType === 'Concat' && n.input!.every((i) => sizes.has(i))) continue;
    const b = n.input!.reduce((sum, i) => sum + (sizes.get(i) ?? 0), 0);
    bytesOf.set(n.opType!, (bytesOf.get(n.opType!) ?? 0) + b);
  }

  const prefix = join(work, 'profile');
  const opts: OpenOptions & SessionOptions = { device: 'cpu', threads, profilePrefix: prefix };
  const model = await DecoderModel.open(out, opts);
  const ids = prompt(128);
  const cache = model.createCache(1, ids.length + steps + 1);
  let next = argmax((await model.forward(cache, [ids])).at(0, ids.length - 1));
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) next = argmax((await model.forward(cache, [[next]])).at(0, 0));
  const stepMs = (performance.now() - t0) / steps;
  model.session.endProfiling();
  await model.release();

  const file = readdirSync(work).find((f) => f.startsWith('profile') && f.endsWith('.json'))!;
  const events = JSON.parse(readFileSync(join(work, file), 'utf8')) as TraceEvent[];
  rmSync(join(work, file));
  // The model_run events: the first is the prompt, the rest are decode steps; node events fall inside them.
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  const decodeKernels = kernels.filter((e) => e.ts >= runs[1]!.ts);
  const perKind = new Map<string, number>();
  const countOf = new Map<string, number>();
  for (const e of decodeKernels) {
    perKind.set(e.args!.op_name!, (perKind.get(e.args!.op_name!) ?? 0) + e.dur / steps);
    countOf.set(e.args!.op_name!, (countOf.get(e.args!.op_name!) ?? 0) + 1 / steps);
  }
  const nodesRun = [...countOf.values()].reduce((a, b) => a + b, 0);
  const kernelUs = [...perKind.values()].reduce((a, b) => a + b, 0);
  const runUs = runs.slice(1).reduce((a, e) => a + e.dur, 0) / steps;
  const rows = [...perKind.entries()].sort((a, b) => b[1] - a[1]);
  console.log(describeMachine(machine()));
  console.log(
    `${precision} (llmopt ${command.join(' ')}), batch 1, decode after a 128-token prompt, ${steps} steps: ` +
      `${stepMs.toFixed(2)} ms a step in JS, ${(runUs / 1000).toFixed(2)} ms in onnxruntime's run, ${(kernelUs / 1000).toFixed(2)} ms in kernels, ` +
      `${nodesRun.toFixed(0)} nodes run a step (${nodes.length} in the graph file)`,
  );
  console.log(
    formatTable([
      ['op kind', 'nodes / step', 'µs / step', 'share of kernels', 'weight MiB read / step', 'GB/s'],
      ...rows.map(([op, us]) => {
        const bytes = bytesOf.get(op) ?? 0;
        return [
          op,
          (countOf.get(op) ?? 0).toFixed(0),
          us.toFixed(0),
          `${((100 * us) / kernelUs).toFixed(1)}%`,
          bytes ? (bytes / 2 ** 20).toFixed(1) : '-',
          bytes ? (bytes / (us * 1e3)).toFixed(1) : '-',
        ];
      }),
    ]),
  );
}
