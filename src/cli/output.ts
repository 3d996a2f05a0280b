// Terminal output rules in one place: results to stdout (JSON with --json), logs and progress bars to
// stderr only when it is a terminal and --quiet is off.
import cliProgress from 'cli-progress';
import type { EvalReport } from '../eval/evaluate.js';

export interface OutputOptions {
  json?: boolean;
  quiet?: boolean;
}

export class Output {
  readonly interactive: boolean;

  constructor(readonly opts: OutputOptions) {
    this.interactive = Boolean(process.stderr.isTTY) && !opts.quiet;
  }

  /** A result line (stdout). */
  result(text: string): void {
    process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** A machine-readable result (stdout). */
  json(value: unknown): void {
    process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** A log line: stderr, terminals only. */
  log(text: string): void {
    if (this.interactive) process.stderr.write(`${text}\n`);
  }

  /** A progress bar on stderr (a no-op off a terminal or with --quiet); call the result to update. */
  progress(label: string): { update: (done: number, total: number) => void; stop: () => void } {
    if (!this.interactive) return { update: () => {}, stop: () => {} };
    const bar = new cliProgress.SingleBar(
      {
        format: `${label} [{bar}] {percentage}% | {value}/{total} | {duration_formatted}`,
        stream: process.stderr,
        hideCursor: true,
        clearOnComplete: true,
      },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update: (done, total) => {
        if (!started) {
          bar.start(total, 0);
          started = true;
        }
        bar.setTotal(total);
        bar.update(done);
      },
      stop: () => {
        if (started) bar.stop();
      },
    };
  }
}

/** The quality rows of a pass that ran --eval: perplexity, KL and top-1 against `against` (dense, source). */
export function qualityRows(e: EvalReport | null | undefined, against: string): Array<[string, string]> {
  if (!e?.reference) return [];
  const r = e.reference;
  return [
    ['perplexity', `${e.perplexity.toFixed(3)} (${against} ${r.perplexity.toFixed(3)})`],
    [`KL vs ${against}`, r.kl.toFixed(5)],
    [`top-1 vs ${against}`, r.top1.toFixed(4)],
  ];
}

/** Formats rows as an aligned plain-text table. */
export function table(rows: Array<Array<string | number>>): string {
  const cells = rows.map((r) => r.map(String));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
