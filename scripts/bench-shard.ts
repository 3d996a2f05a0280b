// Benchmark of llmopt shard on the synthetic ~110M checkpoint (`llmopt synth` defaults): sharding time
// and peak RSS (each in its own process), then batch-1 decode tokens/s of the sharded runtime at
// tp 1, tp 2 and pp 2 against the unsharded runtime, alternating in one process (median of --reps).
// Usage: npm run bench:shard [-- --reps 5 --gen-len 32 --prompt-len 32 --json file]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = new URL('..', import.meta.url).pathname;
const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '5' },
    'gen-len': { type: 'string', default: '32' },
    'prompt-len': { type: 'string', default: '32' },
    json: { type: 'string' },
    child: { type: 'string' },
    keep: { type: 'boolean' },
  },
});

/** Child mode: shard once and report seconds and this process's peak RSS (workers included). */
async function child(spec: string): Promise<void> {
  const { shardModel } = await import('../src/passes/shard/shard.js');
  const { exportModel } = await import('../src/passes/export.js');
  const [src, out, tp, pp] = JSON.parse(spec) as [string, string, number, number];
  const t0 = performance.now();
  if (tp === 0) await exportModel(src, out, { attention: 'fused', layout: 'llmopt' });
  else await shardModel(src, out, { tp, pp, vocab: 'replicated', attention: 'fused', format: 'onnx' });
  process.stdout.write(JSON.stringify({ seconds: (performance.now() - t0) / 1000, peakRssMiB: process.resourceUsage().maxRSS / 1024 }));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  if (args.child) return child(args.child);
  const reps = Number(args.reps);
  const genLen = Number(args['gen-len']);
  const promptLen = Number(args['prompt-len']);
  const work = mkdtempSync(join(tmpdir(), 'llmopt-bench-shard-'));
  const run = (cmd: string[]) => execFileSync(process.execPath, cmd, { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26 });
  try {
    const synth = join(work, 'synth');
    run([join(ROOT, 'bin/llmopt.js'), 'synth', '-o', synth]);
    const variants: Array<[string, number, number]> = [
      ['unsharded', 0, 0],
      ['tp 1', 1, 1],
      ['tp 2', 2, 1],
      ['pp 2', 1, 2],
    ];
    const build: Record<string, { seconds: number; peakRssMiB: number }> = {};
    for (const [name, tp, pp] of variants) {
      const out = join(work, name.replace(' ', ''));
      build[name] = JSON.parse(
        run(['--import', 'tsx', join(ROOT, 'scripts/bench-shard.ts'), '--child', JSON.stringify([synth, out, tp, pp])]),
      );
      console.error(
        `${tp === 0 ? 'export' : 'shard'} ${name}: ${build[name]!.seconds.toFixed(1)} s, peak RSS ${build[name]!.peakRssMiB.toFixed(0)} MiB`,
      );
    }

    const { openModel } = await import('../src/runtime/model.js');
    const models = await Promise.all(variants.map(([name]) => openModel(join(work, name.replace(' ', '')), { device: 'cpu' })));
    const prompt = Array.from({ length: promptLen }, (_, i) => 1 + ((i * 37) % 300));
    const decode: Record<string, number[]> = Object.fromEntries(variants.map(([n]) => [n, []]));
    for (let rep = -1; rep < reps; rep++) {
      for (const [k, [name]] of variants.entries()) {
        const m = models[k]!;
        const cache = m.createCache(1, promptLen + genLen + 1);
        let logits = await m.forward(cache, [prompt]);
        const t0 = performance.now();
        for (let s = 0; s < genLen; s++) {
          const row = logits.at(0, logits.seq - 1);
          let best = 0;
          for (let v = 1; v < row.length; v++) if (row[v]! > row[best]!) best = v;
          logits = await m.forward(cache, [[best]]);
        }
        if (rep >= 0) decode[name]!.push(genLen / ((performance.now() - t0) / 1000)); // rep -1 warms up
      }
    }
    await Promise.all(models.map((m) => m.release()));
    const base = decode.unsharded!;
    const report = {
      model: 'llmopt synth defaults (hidden 768, 12 layers, 12/4 heads, ffn 2048, vocab 32000, float32)',
      promptLen,
      genLen,
      reps,
      build,
      decode: Object.fromEntries(
        variants.map(([n]) => [
          n,
          {
            tokensPerSecond: median(decode[n]!),
            range: [Math.min(...decode[n]!), Math.max(...decode[n]!)],
            ratio: median(decode[n]!.map((x, i) => x / base[i]!)),
          },
        ]),
      ),
    };
    console.log(JSON.stringify(report, null, 2));
    if (args.json) writeFileSync(args.json, `${JSON.stringify(report, null, 2)}\n`);
  } finally {
    if (!args.keep && existsSync(work)) rmSync(work, { recursive: true, force: true });
    else console.error(`kept ${work}`);
  }
}

await main();
