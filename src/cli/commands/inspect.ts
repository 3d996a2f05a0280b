// `llmopt inspect`: what a Hugging Face folder or an artifact holds — architecture, parameters,
// dtypes, bytes, and per-tensor statistics including the fraction of zeros.
import { Command } from 'commander';
import { inspectModel, type ProductsReport } from '../../model/inspect.js';
import { InputError } from '../../core/errors.js';
import { formatBytes, Output, table } from '../output.js';

export function inspectCommand(): Command {
  return new Command('inspect')
    .description('show architecture, parameter count, dtypes, bytes and per-tensor statistics of a model folder, artifact or GGUF file')
    .argument('<model>', 'Hugging Face model folder, llmopt artifact folder or GGUF file')
    .option('--tensors', 'list every tensor with its statistics')
    .option('--nm <N:M>', 'check the linear weights against this N:M pattern (default: the one a pruned checkpoint declares)')
    .option('--json', 'print the full report as JSON (tensors included)')
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  $ llmopt inspect path/to/hf-model\n  $ llmopt inspect out/m --tensors\n  $ llmopt inspect out/m.gguf\n' +
        '  $ llmopt inspect out/m --json | jq .zeroFraction',
    )
    .action(async (dir: string, o: { tensors?: boolean; nm?: string; json?: boolean }) => {
      const out = new Output({ json: o.json });
      let nm: { n: number; m: number } | undefined;
      if (o.nm) {
        const match = /^(\d+):(\d+)$/.exec(o.nm);
        if (!match || Number(match[1]) < 1 || Number(match[1]) >= Number(match[2]))
          throw new InputError(`--nm ${o.nm}: expected N:M with 1 <= N < M, such as 2:4`);
        nm = { n: Number(match[1]), m: Number(match[2]) };
      }
      const r = await inspectModel(dir, { nm });
      if (o.json) return out.json(r);
      const a = r.architecture;
      const rows: Array<Array<string | number>> = [
        ['kind', r.kind],
        [
          'architecture',
          `${a.name}: ${a.layers} layers, hidden ${a.hidden}, heads ${a.heads} (kv ${a.kvHeads}), head_dim ${a.headDim}, ` +
            `ffn ${a.intermediate}, vocab ${a.vocab}, context ${a.context}${a.tied ? ', tied embeddings' : ''}`,
        ],
        ['parameters', r.parameters.toLocaleString('en-US')],
        ['bytes', formatBytes(r.bytes)],
        [
          'dtypes',
          Object.entries(r.dtypes)
            .map(([d, v]) => `${d}: ${v.tensors} tensors, ${formatBytes(v.bytes)}`)
            .join('; '),
        ],
        ['zeros', `${(r.zeroFraction * 100).toFixed(2)}%`],
      ];
      if (r.weightBits) {
        const byBits = new Map<number, string[]>();
        for (const [module, bits] of Object.entries(r.weightBits)) byBits.set(bits, [...(byBits.get(bits) ?? []), module]);
        const few = (m: string[]) => (m.length <= 4 ? `: ${m.join(', ')}` : '');
        const parts = [...byBits].sort(([a], [b]) => a - b).map(([bits, m]) => `${bits}-bit ${m.length}${byBits.size > 1 ? few(m) : ''}`);
        rows.push(['weight bits', parts.join('; ')]);
      }
      if (r.products) rows.push(['products', productsLine(r.products)]);
      if (r.manifest) rows.push(['passes', r.manifest.map((p) => p.pass).join(' -> ')]);
      if (r.metadata) for (const [key, value] of Object.entries(r.metadata)) rows.push([key, String(value)]);
      if (r.nm) {
        rows.push([
          `${r.nm.n}:${r.nm.m} pattern`,
          r.nm.violatingTensors.length === 0
            ? `holds in all ${r.nm.tensors} linear weights`
            : `BROKEN in ${r.nm.violatingTensors.length} of ${r.nm.tensors}: ` +
              `${r.nm.violatingTensors.slice(0, 3).join(', ')}${r.nm.violatingTensors.length > 3 ? ', ...' : ''}`,
        ]);
      }
      out.result(table(rows));
      if (o.tensors) {
        out.result('');
        out.result(
          table([
            ['tensor', 'dtype', 'shape', 'bytes', 'mean', 'std', 'min', 'max', 'zeros', ...(r.nm ? [`${r.nm.n}:${r.nm.m}`] : [])],
            ...r.tensors.map((t) => [
              t.name,
              t.dtype,
              `[${t.shape.join(',')}]`,
              t.bytes,
              fmt(t.mean),
              fmt(t.std),
              fmt(t.min),
              fmt(t.max),
              t.zeroFraction === null || t.zeroFraction === undefined ? '-' : `${(t.zeroFraction * 100).toFixed(2)}%`,
              ...(r.nm ? [t.nmViolations === undefined ? '-' : t.nmViolations === 0 ? 'ok' : `${t.nmViolations} bad groups`] : []),
            ]),
          ]),
        );
      }
    });
}

function fmt(v: number | null | undefined): string {
  return v === null || v === undefined ? '-' : v.toPrecision(4);
}

/** "MatMulNBits: 22 nodes, blocks of 32, accuracy level 4, zero points in 22, ...": one value, or each with its count. */
function productsLine(p: ProductsReport): string {
  const values = (counts: Record<string, number>) => {
    const e = Object.entries(counts);
    return e.length === 1 ? e[0]![0] : e.map(([v, n]) => `${v} (${n})`).join(', ');
  };
  const parts: string[] = [];
  if (p.nodes > 0) {
    const matmul = [`${p.nodes} nodes`, `blocks of ${values(p.blockSizes)}`, `accuracy level ${values(p.accuracyLevels)}`];
    matmul.push(p.zeroPoints === 0 ? 'symmetric' : `zero points in ${p.zeroPoints}`);
    if (p.activationResidual > 0) matmul.push(`activation residual in ${p.activationResidual}`);
    parts.push(`MatMulNBits: ${matmul.join(', ')}`);
  }
  if (p.quantizedGathers > 0) parts.push(`GatherBlockQuantized: ${p.quantizedGathers}`);
  return parts.join('; ');
}
