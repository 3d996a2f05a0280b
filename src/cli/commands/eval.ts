// `llmopt eval`: perplexity over a text file and, against a reference, KL divergence and top-1
// agreement; thresholds turn it into a CI gate (exit 1 when one fails).
import { Command } from 'commander';
import { GateError } from '../../core/errors.js';
import { loadEvalWindows } from '../../eval/dataset.js';
import { checkGates, evaluate } from '../../eval/evaluate.js';
import { openReference, type OpenedReference } from '../../eval/reference.js';
import { loadTokenizer } from '../../formats/tokenizer.js';
import type { Device } from '../../runtime/device.js';
import { openModel } from '../../runtime/model.js';
import { deviceOptions, intOption, numberOption } from '../options.js';
import { Output, table } from '../output.js';

interface EvalCliOptions {
  data: string;
  reference?: string;
  maxKl?: number;
  minTop1?: number;
  maxPplRatio?: number;
  batchSize: number;
  limit?: number;
  device: Device;
  rankDevices?: Device[];
  threads?: number;
  json?: boolean;
  quiet?: boolean;
}

export function evalCommand(): Command {
  return deviceOptions(new Command('eval'), { rankDevices: true })
    .description('measure perplexity, and KL divergence / top-1 agreement against a reference model')
    .argument('<artifact>', 'artifact folder to evaluate')
    .requiredOption('--data <file>', 'UTF-8 text, one document per line (windows of at most the model context)')
    .option('--reference <model>', 'reference: a Hugging Face folder (exported to float32 on the fly) or another artifact')
    .option('--max-kl <nats>', 'fail (exit 1) when the mean KL divergence exceeds this', numberOption('--max-kl', 0))
    .option('--min-top1 <fraction>', 'fail (exit 1) when top-1 agreement is below this', numberOption('--min-top1', 0, 1))
    .option('--max-ppl-ratio <ratio>', 'fail (exit 1) when perplexity / reference perplexity exceeds this', numberOption('--max-ppl-ratio', 0))
    .option('--batch-size <n>', 'windows per forward pass', intOption('--batch-size', 1), 8)
    .option('--limit <n>', 'evaluate only the first n documents', intOption('--limit', 1))
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress bar')
    .addHelpText('after', '\nExample:\n  $ llmopt eval out/m --data eval.txt --reference path/to/hf-model --max-kl 0.01 --json')
    .action(async (artifact: string, o: EvalCliOptions) => {
      const out = new Output(o);
      const gates = { maxKl: o.maxKl, minTop1: o.minTop1, maxPplRatio: o.maxPplRatio };
      const model = await openModel(artifact, { device: o.device, threads: o.threads, rankDevices: o.rankDevices });
      let reference: OpenedReference | null = null;
      try {
        const windows = loadEvalWindows(o.data, loadTokenizer(artifact), model.spec.maxPositions, o.limit);
        if (o.reference) reference = await openReference(o.reference, { device: o.device, threads: o.threads });
        const bar = out.progress('eval');
        const report = await evaluate(model, windows, reference?.model ?? null, { batchSize: o.batchSize, onProgress: bar.update }).finally(bar.stop);
        const results = checkGates(report, gates);
        if (o.json) out.json({ artifact, data: o.data, referenceModel: o.reference ?? null, device: model.device, ...report, gates: results });
        else {
          const rows: Array<Array<string | number>> = [
            ['windows', report.windows],
            ['tokens', report.tokens],
            ['perplexity', report.perplexity.toFixed(4)],
          ];
          if (report.reference) {
            const r = report.reference;
            rows.push(['reference perplexity', r.perplexity.toFixed(4)], ['perplexity ratio', r.pplRatio.toFixed(5)], ['KL (nats/token)', r.kl.toExponential(4)], ['KL max', r.klMax.toExponential(4)], ['top-1 agreement', r.top1.toFixed(4)]);
          }
          for (const g of results) rows.push([`gate ${g.gate} ${g.limit}`, g.passed ? 'pass' : `FAIL (${g.value.toPrecision(6)})`]);
          out.result(table(rows));
        }
        const failed = results.filter((g) => !g.passed);
        if (failed.length) throw new GateError(`quality gate failed: ${failed.map((g) => `${g.gate} ${g.limit} (measured ${g.value.toPrecision(6)})`).join(', ')}`);
      } finally {
        await reference?.close();
        await model.release();
      }
    });
}
