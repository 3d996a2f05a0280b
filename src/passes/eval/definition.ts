// eval's declaration: perplexity of a model on a text and, against a reference, KL divergence and top-1
// agreement. A recipe gates them with gate:; the command line with --max-kl, --min-top1, --max-ppl-ratio.
import { compareModels } from '../../eval/compare.js';
import { boolean, deviceOptions, int, number, OptionError, printOptions, stageRef, textFile } from '../options.js';
import { definePass, QUALITY_GATES, quality, type ModelKindName } from '../pass.js';

const EVALUATED: ModelKindName[] = ['hf', 'hf-quantized', 'artifact', 'sharded'];
const gate = (arg: string, help: string, max = Infinity) => number({ arg, help, min: 0, max, only: 'cli' });

export const EVAL_OPTIONS = {
  ...deviceOptions({ threads: 'cli', rankDevices: true }),
  data: textFile({ required: true, recipeDefault: true, help: 'UTF-8 text, one document per line (windows of at most the model context)' }),
  reference: stageRef({
    arg: '<model>',
    recipeDefault: 'source',
    help: 'reference: a Hugging Face folder (exported to float32 on the fly) or another artifact',
  }),
  maxKl: gate('<nats>', 'fail (exit 1) when the mean KL divergence exceeds this'),
  minTop1: gate('<fraction>', 'fail (exit 1) when top-1 agreement is below this', 1),
  maxPplRatio: gate('<ratio>', 'fail (exit 1) when perplexity / reference perplexity exceeds this'),
  batchSize: int({ min: 1, default: 8, help: 'windows per forward pass' }),
  limit: int({ min: 1, help: 'evaluate only the first n documents' }),
  chunks: int({
    arg: '<n>',
    min: 4,
    help: "score as llama-perplexity -c n does: the whole text one stream, chunks of n tokens, each chunk's second half",
  }),
  chat: boolean({ only: 'cli', help: "each document is a user message, rendered with the model's chat template before scoring" }),
  ...printOptions('no progress bar'),
};

export const evalPass = definePass({
  name: 'eval',
  options: EVAL_OPTIONS,
  reads: { input: EVALUATED, reference: EVALUATED },
  writes: () => null,
  figures: () => QUALITY_GATES,
  validate: (o) => {
    if (o.chunks !== undefined && o.limit !== undefined)
      throw new OptionError('limit', (n) => `${n('limit')} counts documents; ${n('chunks')} reads the text as one stream`);
    if (o.chunks !== undefined && o.chat)
      throw new OptionError('chat', (n) => `${n('chat')} templates each document; ${n('chunks')} reads the text as one stream`);
  },
  run: (o, ctx) =>
    compareModels(ctx.reads.input!, ctx.reads.reference!, o.data, {
      device: ctx.device,
      batchSize: o.batchSize,
      limit: o.limit,
      chunks: o.chunks,
      onProgress: ctx.onProgress,
    }),
  measured: quality,
});
