// `llmopt bench` and `generate --draft` as a user runs them: a small run on a fixture writes the table,
// JSON with the machine and an SVG chart; bad input is one line on stderr and exit code 2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GQA, MHA, NEEDS_SHARED, AIDREAMS, exportedArtifact, runCli, tempDir } from '../support.js';

function failsWithInput(args: string[], message: RegExp): void {
  const r = runCli(args);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
}

test('bench: batch sweep, request trace and speculative decoding on two fixtures, with JSON and chart', async () => {
  const gqa = await exportedArtifact(GQA, 'fused');
  const mha = await exportedArtifact(MHA, 'fused');
  const dir = tempDir();
  const json = join(dir, 'bench.json');
  const chart = join(dir, 'bench.svg');
  const r = runCli([
    'bench',
    gqa,
    mha,
    '--batch',
    '1,2',
    '--prompt-len',
    '8',
    '--gen-len',
    '6',
    '--reps',
    '2',
    '--requests',
    '6',
    '--arrival-rate',
    '200',
    '--slots',
    '2',
    '--draft',
    mha,
    '--draft-tokens',
    '3',
    '--json',
    json,
    '--chart',
    chart,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /static batching/);
  assert.match(r.stdout, /request trace/);
  assert.match(r.stdout, /speculative decoding/);
  const report = JSON.parse(readFileSync(json, 'utf8'));
  assert.ok(
    report.machine.cpu &&
      report.machine.cores > 0 &&
      report.machine.memoryGiB > 0 &&
      report.machine.onnxruntime &&
      report.machine.device === 'cpu',
  );
  assert.equal(report.batching.length, 4);
  assert.equal(report.batching[0].decodeRatioToFirst.median, 1);
  // Scaling is each artifact's decode over its own at batch 1, per repetition: exactly 1 at batch 1.
  assert.deepEqual(
    report.batching.map((b: any) => [b.batch, b.scalingBase]),
    [
      [1, 1],
      [1, 1],
      [2, 1],
      [2, 1],
    ],
  );
  for (const b of report.batching.slice(0, 2)) assert.deepEqual([b.decodeScaling.min, b.decodeScaling.max], [1, 1]);
  for (const b of report.batching.slice(2)) assert.ok(b.decodeScaling.median > 0);
  assert.match(r.stdout, /decode vs batch 1/);
  assert.ok(
    report.batching.every(
      (b: any) => b.decodeTokensPerSecond.median > 0 && b.interTokenLatencyMs.p99.median >= b.interTokenLatencyMs.p50.median,
    ),
  );
  assert.deepEqual(
    report.serving.map((s: any) => s.policy),
    ['static', 'static', 'continuous', 'continuous'],
  );
  assert.equal(report.speculative.length, 2);
  assert.equal(report.speculative[0].identical, true);
  assert.equal(report.speculative[1].acceptanceRate.median, 1, 'a draft identical to the target accepts everything');
  const svg = readFileSync(chart, 'utf8');
  assert.match(svg, /^<svg[^>]+xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /Decode throughput/);
  assert.match(svg, /<\/svg>$/);
});

test('generate --draft prints the same greedy text as generate alone', async () => {
  const gqa = await exportedArtifact(GQA, 'fused');
  const mha = await exportedArtifact(MHA, 'fused');
  const alone = runCli(['generate', gqa, '-p', 'Hello', '-p', 'The sea', '-n', '12', '--json']);
  const drafted = runCli(['generate', gqa, '-p', 'Hello', '-p', 'The sea', '-n', '12', '--draft', mha, '--draft-tokens', '3', '--json']);
  assert.equal(drafted.code, 0, drafted.stderr);
  const ids = (r: typeof alone) => JSON.parse(r.stdout).outputs.map((o: any) => o.ids);
  assert.deepEqual(ids(drafted), ids(alone));
  assert.ok(JSON.parse(drafted.stdout).speculative.tokensPerTargetPass >= 1);
});

test('bench: bad input exits 2 with one line', async () => {
  const gqa = await exportedArtifact(GQA, 'fused');
  failsWithInput(['bench', gqa, '--batch', '1,0'], /--batch 1,0: batch size "0" is not a positive integer/);
  failsWithInput(['bench', gqa, '--batch', '2.5'], /not a positive integer/);
  failsWithInput(
    ['bench', gqa, '--prompt-len', '200', '--gen-len', '100'],
    /prompt of 200 tokens plus 100 new tokens exceeds the context of 256/,
  );
  failsWithInput(['bench', join(tempDir(), 'missing')], /missing: folder not found/);
});

test('bench and generate: a draft with another vocabulary is refused', { skip: NEEDS_SHARED }, async () => {
  const gqa = await exportedArtifact(GQA, 'fused');
  const aidreams = await exportedArtifact(AIDREAMS, 'fused');
  failsWithInput(['bench', aidreams, '--draft', gqa, '--prompt-len', '8', '--gen-len', '8'], /vocabulary has 320 tokens, the target's 512/);
  failsWithInput(['generate', aidreams, '--draft', gqa, '-p', 'Hi'], /vocabulary has 320 tokens, the target's 512/);
});
