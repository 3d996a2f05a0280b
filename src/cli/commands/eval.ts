// `llmopt eval`: perplexity over a text file and, against a reference, KL divergence and top-1
// agreement; thresholds turn it into a CI gate (exit 1 when one fails).
import { GateError } from '../../core/errors.js';
import { loadChunkedWindows } from '../../eval/chunks.js';
import { loadEvalWindows } from '../../eval/dataset.js';
import { checkGates, evaluate } from '../../eval/evaluate.js';
import { openReference, type OpenedReference } from '../../eval/reference.js';
import { loadTokenizer } from '../../formats/tokenizer.js';
import { loadChatTemplate } from '../../formats/chat-template.js';
import { openModel } from '../../runtime/model.js';
import { evalPass, type EVAL_OPTIONS } from '../../passes/eval/definition.js';
import type { OptionValues } from '../../passes/options.js';
import { passCommand } from '../pass-command.js';
import { Output, table } from '../output.js';

type EvalCliOptions = OptionValues<typeof EVAL_OPTIONS>;

/** Eval on the command line opens the artifact itself (sharded ones on --rank-devices) and checks its gate flags. */
export function evalCommand() {
  return passCommand('eval')
    .description('measure perplexity, and KL divergence / top-1 agreement against a reference model')
    .argument('<artifact>', 'artifact folder to evaluate')
    .addHelpText('after', '\nExample:\n  $ llmopt eval out/m --data eval.txt --reference path/to/hf-model --max-kl 0.01 --json')
    .action(async (artifact: string, o: EvalCliOptions) => {
      evalPass.validate?.(o, new Set());
      const out = new Output(o);
      const gates = { maxKl: o.maxKl, minTop1: o.minTop1, maxPplRatio: o.maxPplRatio };
      const model = await openModel(artifact, { device: o.device, threads: o.threads, rankDevices: o.rankDevices });
      let reference: OpenedReference | null = null;
      try {
        const tokenizer = loadTokenizer(artifact);
        const chat = o.chat ? loadChatTemplate(tokenizer) : null;
        // --chat scores each document as the model sees it in a conversation: one user turn, templated.
        const encoder = chat ? { encode: (text: string) => chat.encode([{ role: 'user', content: text }]) } : tokenizer;
        const windows =
          o.chunks !== undefined
            ? loadChunkedWindows(o.data, encoder, o.chunks, model.spec.maxPositions, model.spec.bosTokenId)
            : loadEvalWindows(o.data, encoder, model.spec.maxPositions, o.limit);
        if (o.reference) reference = await openReference(o.reference, { device: o.device, threads: o.threads });
        const bar = out.progress('eval');
        const report = await evaluate(model, windows, reference?.model ?? null, { batchSize: o.batchSize, onProgress: bar.update }).finally(
          bar.stop,
        );
        const results = checkGates(report, gates);
        if (o.json)
          out.json({ artifact, data: o.data, referenceModel: o.reference ?? null, device: model.device, ...report, gates: results });
        else {
          const rows: Array<Array<string | number>> = [
            ['windows', report.windows],
            ['tokens', report.tokens],
            ['perplexity', report.perplexity.toFixed(4)],
          ];
          if (report.reference) {
            const r = report.reference;
            rows.push(
              ['reference perplexity', r.perplexity.toFixed(4)],
              ['perplexity ratio', r.pplRatio.toFixed(5)],
              ['KL (nats/token)', r.kl.toExponential(4)],
              ['KL max', r.klMax.toExponential(4)],
              ['top-1 agreement', r.top1.toFixed(4)],
            );
          }
          for (const g of results) rows.push([`gate ${g.gate} ${g.limit}`, g.passed ? 'pass' : `FAIL (${g.value.toPrecision(6)})`]);
          out.result(table(rows));
        }
        const failed = results.filter((g) => !g.passed);
        if (failed.length)
          throw new GateError(
            `quality gate failed: ${failed.map((g) => `${g.gate} ${g.limit} (measured ${g.value.toPrecision(6)})`).join(', ')}`,
          );
      } finally {
        await reference?.close();
        await model.release();
      }
    });
}
