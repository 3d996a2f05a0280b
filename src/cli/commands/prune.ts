// `llmopt prune`: N:M or unstructured sparsity by magnitude, Wanda or SparseGPT, written as a Hugging
// Face folder; with --eval, KL / top-1 / perplexity of the result against the dense model.
import { passAction, passCommand } from '../pass-command.js';
import { qualityRows, table } from '../output.js';

export function pruneCommand() {
  return passCommand('prune')
    .description('prune the q/k/v/o/gate/up/down projections to N:M (2:4) or unstructured sparsity')
    .argument('<model>', 'Hugging Face model folder')
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  $ llmopt prune path/to/hf-model --sparsity 2:4 --method wanda --calib train.txt -o out/m-24\n' +
        '  $ llmopt prune path/to/hf-model --sparsity 0.5 --method sparsegpt --calib train.txt --eval eval.txt -o out/m-50',
    )
    .action(
      passAction('prune', {
        labels: { '': 'prune layers', eval: 'eval' },
        print: (report, o, out) => {
          if (o.json) return out.json(report);
          const quality = report.eval;
          const rows: Array<Array<string | number>> = [
            ['output', report.output],
            ['method', report.method],
            ['structure', String(o.sparsity)],
            ['targets', `${report.targets} tensors`],
            ['sparsity', `${(report.sparsity * 100).toFixed(2)}% of targeted weights`],
            ...Object.entries(report.byKind).map(([k, v]) => [`  ${k}_proj`, `${(v!.sparsity * 100).toFixed(2)}% (${v!.tensors} tensors)`]),
          ];
          const violations = report.tensors.reduce((a, t) => a + (t.nmViolations ?? 0), 0);
          if (report.structure.kind === 'nm') rows.push(['N:M groups violating', violations]);
          if (report.calibrationTokens) rows.push(['calibration tokens', report.calibrationTokens]);
          rows.push(['time', `${report.seconds.toFixed(1)} s`]);
          rows.push(...qualityRows(quality, 'dense'));
          out.result(table(rows));
        },
      }),
    );
}
