// `llmopt prune`: N:M or unstructured sparsity by magnitude, Wanda or SparseGPT, written as a Hugging
// Face folder; with --eval, KL / top-1 / perplexity of the result against the dense model.
import { Command } from 'commander';
import { compareModels } from '../../eval/compare.js';
import { prune, parseSparsity, PRUNE_METHODS, type PruneMethod } from '../../passes/prune/prune.js';
import { choiceOption, collect, intOption, numberOption } from '../options.js';
import { Output, table } from '../output.js';

interface PruneCliOptions {
  sparsity: string;
  method: PruneMethod;
  scope: 'row' | 'layer';
  calib?: string;
  calibSamples: number;
  calibSeqLen?: number;
  exclude: string[];
  dampening: number;
  sequential: boolean;
  eval?: string;
  output: string;
  json?: boolean;
  quiet?: boolean;
}

export function pruneCommand(): Command {
  return new Command('prune')
    .description('prune the q/k/v/o/gate/up/down projections to N:M (2:4) or unstructured sparsity')
    .argument('<model>', 'Hugging Face model folder')
    .requiredOption('-o, --output <dir>', 'Hugging Face folder to write (same tensor names and dtypes, exact zeros)')
    .requiredOption('--sparsity <s>', 'N:M such as 2:4 (N kept of every M consecutive inputs) or a fraction such as 0.5')
    .option('--method <method>', `${PRUNE_METHODS.join(' | ')} (wanda and sparsegpt need --calib)`, choiceOption('--method', PRUNE_METHODS), 'magnitude')
    .option('--scope <scope>', 'unstructured ranking: per output row or over the whole tensor (layer)', choiceOption('--scope', ['row', 'layer'] as const), 'row')
    .option('--calib <file>', 'calibration text, one document per line')
    .option('--calib-samples <n>', 'calibration windows', intOption('--calib-samples', 1), 128)
    .option('--calib-seq-len <n>', 'tokens per calibration window (default: min(128, context))', intOption('--calib-seq-len', 2))
    .option('--exclude <glob>', 'keep matching modules dense, e.g. "model.layers.0.*" (repeatable)', collect, [])
    .option('--dampening <f>', 'SparseGPT Hessian dampening, a fraction of the mean diagonal', numberOption('--dampening', 0), 0.01)
    .option('--no-sequential', "calibrate every layer on the dense model's activations instead of the pruned layers' outputs")
    .option('--eval <file>', 'after pruning, measure KL / top-1 / perplexity against the dense model on this text')
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress bar')
    .addHelpText('after', '\nExample:\n  $ llmopt prune path/to/hf-model --sparsity 2:4 --method wanda --calib train.txt -o out/m-24\n  $ llmopt prune path/to/hf-model --sparsity 0.5 --method sparsegpt --calib train.txt --eval eval.txt -o out/m-50')
    .action(async (model: string, o: PruneCliOptions) => {
      const out = new Output(o);
      const structure = parseSparsity(o.sparsity, o.scope);
      const bar = out.progress(o.method === 'magnitude' ? 'prune tensors' : 'prune layers');
      const report = await prune(model, o.output, {
        structure,
        method: o.method,
        calib: o.calib,
        calibSamples: o.calibSamples,
        calibSeqLen: o.calibSeqLen,
        exclude: o.exclude,
        dampening: o.dampening,
        sequential: o.sequential,
        onProgress: bar.update,
      }).finally(bar.stop);
      let quality = null;
      if (o.eval) {
        const evalBar = out.progress('eval');
        quality = await compareModels(o.output, model, o.eval, { onProgress: evalBar.update }).finally(evalBar.stop);
      }
      if (o.json) return out.json({ ...report, eval: quality });
      const rows: Array<Array<string | number>> = [
        ['output', report.output],
        ['method', report.method],
        ['structure', o.sparsity],
        ['targets', `${report.targets} tensors`],
        ['sparsity', `${(report.sparsity * 100).toFixed(2)}% of targeted weights`],
        ...Object.entries(report.byKind).map(([k, v]) => [`  ${k}_proj`, `${(v!.sparsity * 100).toFixed(2)}% (${v!.tensors} tensors)`]),
      ];
      const violations = report.tensors.reduce((a, t) => a + (t.nmViolations ?? 0), 0);
      if (structure.kind === 'nm') rows.push(['N:M groups violating', violations]);
      if (report.calibrationTokens) rows.push(['calibration tokens', report.calibrationTokens]);
      rows.push(['time', `${report.seconds.toFixed(1)} s`]);
      if (quality?.reference) {
        rows.push(['perplexity', `${quality.perplexity.toFixed(3)} (dense ${quality.reference.perplexity.toFixed(3)})`], ['KL vs dense', quality.reference.kl.toFixed(5)], ['top-1 vs dense', quality.reference.top1.toFixed(4)]);
      }
      out.result(table(rows));
    });
}
