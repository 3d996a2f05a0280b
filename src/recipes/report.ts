// The report of a recipe run: one row per stage (time, bytes, KL / top-1 / perplexity against the
// source, tokens/s, gates), as rows for the CLI's table and as report.json and report.md in the run folder.
import { join } from 'node:path';
import { describeGate, type GateResult } from './gates.js';
import type { StageFigures } from './stages.js';
import { writeFileAtomic } from './run-state.js';

export interface StageReport extends Omit<StageFigures, 'report'> {
  index: number;
  name: string;
  pass: string;
  dir: string;
  /** ran now, skipped (finished earlier with the same hash), or not run (a gate stopped the run). */
  status: 'ran' | 'skipped' | 'not run';
  gates: GateResult[];
}

export interface RunReport {
  recipe: { name: string; file: string };
  source: { path: string; bytes: number };
  output: string;
  device: string;
  stages: StageReport[];
  /** The first failed gate, which stopped the run (the CLI exits 1). */
  failedGate: (GateResult & { stage: string }) | null;
  seconds: number;
}

const bytes = (n: number) => (n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`);
const num = (v: number | null, f: (v: number) => string) => (v === null || !Number.isFinite(v) ? '-' : f(v));

/** The report as table rows, a header first. */
export function reportRows(r: RunReport): string[][] {
  const sourcePpl = r.stages.find((s) => s.perplexity !== null && s.pplRatio !== null);
  const rows = [
    ['stage', 'status', 'time', 'bytes', 'KL', 'top-1', 'perplexity', 'tokens/s', 'gates'],
    ['source', '', '', bytes(r.source.bytes), '', '', sourcePpl ? (sourcePpl.perplexity! / sourcePpl.pplRatio!).toFixed(3) : '-', '', ''],
  ];
  for (const s of r.stages) {
    rows.push([
      s.dir,
      s.status,
      s.status === 'not run' ? '-' : `${s.seconds.toFixed(s.seconds < 10 ? 2 : 1)} s`,
      num(s.bytes, bytes),
      num(s.kl, (v) => v.toFixed(4)),
      num(s.top1, (v) => v.toFixed(3)),
      num(s.perplexity, (v) => v.toFixed(3)),
      num(s.tokensPerSecond, (v) => v.toFixed(0)),
      s.gates.map((g) => `${g.gate} ${g.limit}: ${g.passed ? 'pass' : 'FAIL'}`).join(', ') || '-',
    ]);
  }
  return rows;
}

export function reportMarkdown(r: RunReport): string {
  const [head, ...body] = reportRows(r);
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [
    `# llmopt run: ${r.recipe.name}`,
    '',
    `Recipe \`${r.recipe.file}\` on \`${r.source.path}\`, device ${r.device}, ${r.seconds.toFixed(1)} s. ` +
      `KL, top-1 and perplexity are measured against the source (an eval stage's reference).`,
    '',
    line(head!),
    line(head!.map(() => '---')),
    ...body.map(line),
    '',
    r.failedGate ? `**Stopped:** stage ${r.failedGate.stage}: ${describeGate(r.failedGate)}.` : 'Every gate passed.',
    '',
  ].join('\n');
}

/** Writes report.json and report.md into the run folder. */
export function writeReport(dir: string, r: RunReport): void {
  writeFileAtomic(join(dir, 'report.json'), `${JSON.stringify(r, null, 2)}\n`);
  writeFileAtomic(join(dir, 'report.md'), reportMarkdown(r));
}
