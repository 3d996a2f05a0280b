// The table export and quantize print for a written GGUF file: architecture, tokenizer, tensor types, size.
import type { GgufWriteReport } from '../../passes/export/gguf.js';
import { formatBytes, table } from '../output.js';

export function ggufTable(report: GgufWriteReport, extra: Array<[string, string]> = []): string {
  const types = Object.entries(report.types)
    .map(([t, n]) => `${t} x${n}`)
    .join(', ');
  return table([
    ['output', `${report.output} (gguf)`],
    ['architecture', report.architecture],
    ['tokenizer', `${report.tokenizer.model} (pre-tokenizer ${report.tokenizer.pre})`],
    ['parameters', report.parameters.toLocaleString('en-US')],
    ['tensors', `${report.tensors}: ${types}`],
    ...extra,
    ['size', formatBytes(report.bytes)],
    ['time', `${report.seconds.toFixed(2)} s`],
  ]);
}
