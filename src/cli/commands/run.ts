// `llmopt run`: the quick start on the bundled fixture — export, generate, eval against the source.
// (Recipes that chain passes will run through this command as they land.)
import { Command } from 'commander';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { loadEvalWindows } from '../../eval/dataset.js';
import { evaluate } from '../../eval/evaluate.js';
import { openReference } from '../../eval/reference.js';
import { loadTokenizer } from '../../formats/tokenizer.js';
import { exportModel } from '../../passes/export.js';
import { openModel } from '../../runtime/model.js';
import { DEVICES, type Device } from '../../runtime/device.js';
import { generate } from '../../runtime/generate.js';
import { GREEDY } from '../../runtime/sampling.js';
import { choiceOption } from '../options.js';
import { formatBytes, Output, table } from '../output.js';

const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const QUICKSTART_MODEL = join(PACKAGE_ROOT, 'fixtures', 'tiny-llama-mha');
export const QUICKSTART_TEXT = join(PACKAGE_ROOT, 'fixtures', 'text', 'sample.txt');

export function runCommand(): Command {
  return new Command('run')
    .description('quick start: export the bundled fixture (or --model), generate from a prompt, evaluate against the source')
    .option('--model <dir>', 'Hugging Face model folder', QUICKSTART_MODEL)
    .option('--data <file>', 'eval text, one document per line', QUICKSTART_TEXT)
    .option('--prompt <text>', 'prompt for the generation step', 'Once upon a time')
    .option('-o, --output <dir>', 'where the artifact goes', join('out', 'quickstart'))
    .option('--device <device>', `execution device: ${DEVICES.join(' | ')}`, choiceOption('--device', DEVICES), 'cpu')
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress bars')
    .addHelpText('after', '\nExample:\n  $ llmopt run\n  $ llmopt run --model path/to/hf-model --data eval.txt -o out/first')
    .action(async (o: { model: string; data: string; prompt: string; output: string; device: Device; json?: boolean; quiet?: boolean }) => {
      const out = new Output(o);
      const bar = out.progress('export');
      const exported = await exportModel(o.model, o.output, { attention: 'fused', layout: 'llmopt', onProgress: bar.update }).finally(bar.stop);
      const model = await openModel(o.output, { device: o.device });
      const reference = await openReference(o.model, { device: o.device });
      try {
        const tokenizer = loadTokenizer(o.output);
        const gen = await generate(model, [tokenizer.encode(o.prompt)], { maxNewTokens: 32, sampling: GREEDY });
        const text = tokenizer.decode(gen.tokens[0]!);
        const windows = loadEvalWindows(o.data, tokenizer, model.spec.maxPositions);
        const evalBar = out.progress('eval');
        const quality = await evaluate(model, windows, reference.model, { batchSize: 8, onProgress: evalBar.update }).finally(evalBar.stop);
        const report = {
          model: o.model,
          artifact: o.output,
          export: exported,
          generate: { prompt: o.prompt, ids: gen.tokens[0], text, decodeTokensPerSecond: gen.decodeSteps / gen.decodeSeconds },
          eval: quality,
        };
        if (o.json) return out.json(report);
        out.result(
          table([
            ['model', o.model],
            ['artifact', `${o.output} (${formatBytes(exported.dataBytes)} weights, ${exported.attention} attention)`],
            ['generate', JSON.stringify(o.prompt + text) + (o.model === QUICKSTART_MODEL ? ' (random fixture weights: the text is noise)' : '')],
            ['decode', `${report.generate.decodeTokensPerSecond.toFixed(0)} tokens/s (${model.device})`],
            ['perplexity', `${quality.perplexity.toFixed(3)} on ${quality.tokens} tokens of ${o.data}`],
            ['KL vs source', quality.reference!.kl.toExponential(3)],
            ['top-1 vs source', quality.reference!.top1.toFixed(4)],
          ]),
        );
      } finally {
        await reference.close();
        await model.release();
      }
    });
}
