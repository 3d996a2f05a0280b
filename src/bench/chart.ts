// The bench report as an SVG chart: decode throughput and inter-token latency against batch size per
// artifact, and, when measured, the request trace (static against continuous) and speculative decoding.
import type { BenchReport } from './bench.js';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
const DASHES: Record<string, string> = { p50: '', p95: '6 3', p99: '2 3' };
const W = 480;
const H = 300;
const M = { left: 64, right: 16, top: 36, bottom: 64 };

interface Series {
  label: string;
  color: string;
  dash?: string;
  values: number[];
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Round axis ticks from 0 to at least `max`. */
function ticks(max: number): number[] {
  const raw = (max > 0 ? max : 1) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  return Array.from({ length: Math.ceil(max / step) + 1 }, (_, i) => +(i * step).toPrecision(6));
}

/** Axes, grid, title and legend of one panel; returns the y scale. */
function frame(
  out: string[],
  x0: number,
  y0: number,
  title: string,
  yLabel: string,
  xLabels: string[],
  series: Series[],
  xAt: (i: number) => number,
): (v: number) => number {
  const max = Math.max(0, ...series.flatMap((s) => s.values.filter(Number.isFinite)));
  const ys = ticks(max);
  const top = ys[ys.length - 1]!;
  // The legend sits under the x labels, three to a row when there are many (p50/p95/p99 of one
  // artifact share a row); the plot gives up height to fit every row inside the panel.
  const cols = series.length > 4 ? 3 : 2;
  const bottom = Math.max(M.bottom, 36 + Math.ceil(series.length / cols) * 13);
  const y = (v: number) => y0 + M.top + (H - M.top - bottom) * (1 - v / top);
  out.push(`<text x="${x0 + W / 2}" y="${y0 + 20}" text-anchor="middle" font-weight="bold">${esc(title)}</text>`);
  for (const t of ys) {
    out.push(`<line x1="${x0 + M.left}" x2="${x0 + W - M.right}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/>`);
    out.push(`<text x="${x0 + M.left - 6}" y="${y(t) + 4}" text-anchor="end" font-size="11">${t}</text>`);
  }
  out.push(`<text transform="translate(${x0 + 14},${y0 + H / 2}) rotate(-90)" text-anchor="middle" font-size="11">${esc(yLabel)}</text>`);
  xLabels.forEach((l, i) =>
    out.push(`<text x="${xAt(i)}" y="${y0 + H - bottom + 16}" text-anchor="middle" font-size="11">${esc(l)}</text>`),
  );
  out.push(`<line x1="${x0 + M.left}" x2="${x0 + W - M.right}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>`);
  series.forEach((s, i) => {
    const lx = x0 + M.left + (i % cols) * ((W - M.left - M.right) / cols);
    const ly = y0 + H - bottom + 34 + Math.floor(i / cols) * 13;
    out.push(
      `<line x1="${lx}" x2="${lx + 18}" y1="${ly - 4}" y2="${ly - 4}" ` +
        `stroke="${s.color}" stroke-width="3" stroke-dasharray="${s.dash ?? ''}"/>`,
    );
    out.push(`<text x="${lx + 22}" y="${ly}" font-size="10">${esc(s.label)}</text>`);
  });
  return y;
}

function linePanel(out: string[], x0: number, y0: number, title: string, yLabel: string, xLabels: string[], series: Series[]): void {
  const xAt = (i: number) => x0 + M.left + 20 + ((W - M.left - M.right - 40) * i) / Math.max(1, xLabels.length - 1);
  const y = frame(out, x0, y0, title, yLabel, xLabels, series, xAt);
  for (const s of series) {
    const pts = s.values.map((v, i) => `${xAt(i).toFixed(1)},${y(v).toFixed(1)}`);
    out.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2" stroke-dasharray="${s.dash ?? ''}"/>`);
    for (const p of pts) out.push(`<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="3" fill="${s.color}"/>`);
  }
}

function barPanel(out: string[], x0: number, y0: number, title: string, yLabel: string, groups: string[], series: Series[]): void {
  const gw = (W - M.left - M.right) / groups.length;
  const xAt = (i: number) => x0 + M.left + gw * (i + 0.5);
  const y = frame(out, x0, y0, title, yLabel, groups, series, xAt);
  const bw = (gw * 0.8) / series.length;
  series.forEach((s, k) =>
    s.values.forEach((v, i) => {
      const x = xAt(i) - gw * 0.4 + k * bw;
      out.push(
        `<rect x="${x.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(bw - 2).toFixed(1)}" ` +
          `height="${(y(0) - y(v)).toFixed(1)}" fill="${s.color}"/>`,
      );
    }),
  );
}

const short = (path: string) => path.replace(/\/+$/, '').split('/').pop()!;

export function benchChart(r: BenchReport): string {
  const out: string[] = [];
  const panels: Array<(x0: number, y0: number) => void> = [];
  const batches = [...new Set(r.batching.map((b) => b.batch))];
  const artifacts = r.artifacts.map((a) => a.path);
  if (batches.length) {
    const at = (a: string, f: (b: BenchReport['batching'][number]) => number) =>
      batches.map((n) => f(r.batching.find((b) => b.artifact === a && b.batch === n)!));
    panels.push((x, y) =>
      linePanel(
        out,
        x,
        y,
        'Decode throughput (all rows) vs batch size',
        'tokens/s',
        batches.map(String),
        artifacts.map((a, i) => ({
          label: short(a),
          color: COLORS[i % COLORS.length]!,
          values: at(a, (b) => b.decodeTokensPerSecond.median),
        })),
      ),
    );
    panels.push((x, y) =>
      linePanel(
        out,
        x,
        y,
        'Inter-token latency vs batch size',
        'ms',
        batches.map(String),
        artifacts.flatMap((a, i) =>
          (['p50', 'p95', 'p99'] as const).map((p) => ({
            label: `${short(a)} ${p}`,
            color: COLORS[i % COLORS.length]!,
            dash: DASHES[p],
            values: at(a, (b) => b.interTokenLatencyMs[p].median),
          })),
        ),
      ),
    );
  }
  if (r.serving.length) {
    const runs = r.serving;
    const label = (s: (typeof runs)[number]) => `${short(s.artifact)} ${s.policy} (${s.throughput.median.toFixed(0)} tok/s)`;
    panels.push((x, y) =>
      barPanel(
        out,
        x,
        y,
        'Request trace: time to first token',
        'ms',
        ['p50', 'p95', 'p99'],
        runs.map((s, i) => ({
          label: label(s),
          color: COLORS[i % COLORS.length]!,
          values: (['p50', 'p95', 'p99'] as const).map((p) => s.timeToFirstTokenMs[p].median),
        })),
      ),
    );
    panels.push((x, y) =>
      barPanel(
        out,
        x,
        y,
        'Request trace: end-to-end latency',
        'ms',
        ['p50', 'p95', 'p99'],
        runs.map((s, i) => ({
          label: label(s),
          color: COLORS[i % COLORS.length]!,
          values: (['p50', 'p95', 'p99'] as const).map((p) => s.endToEndMs[p].median),
        })),
      ),
    );
  }
  if (r.speculative.length) {
    const runs = r.speculative;
    panels.push((x, y) =>
      barPanel(
        out,
        x,
        y,
        `Speculative decoding (K = ${runs[0]!.draftTokens}), batch 1`,
        'decode tokens/s',
        runs.map((s) => short(s.artifact)),
        [
          { label: 'target alone', color: COLORS[0]!, values: runs.map((s) => s.targetOnlyTokensPerSecond.median) },
          { label: 'with draft', color: COLORS[2]!, values: runs.map((s) => s.speculativeTokensPerSecond.median) },
        ],
      ),
    );
  }
  const cols = Math.min(2, panels.length);
  const rows = Math.ceil(panels.length / 2);
  panels.forEach((p, i) => p((i % 2) * W, 40 + Math.floor(i / 2) * H));
  const width = Math.max(1, cols) * W;
  const height = 40 + rows * H;
  const m = r.machine;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="24" font-size="12">` +
      `${esc(`llmopt bench: ${m.cpu}, ${m.cores} cores, ${m.device}, onnxruntime ${m.onnxruntime}`)}</text>`,
    ...out,
    '</svg>',
  ].join('\n');
}
