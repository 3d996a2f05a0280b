// `llmopt distill`: knowledge distillation of a pruned or shallower student from its teacher, with a
// progress bar (loss, tokens/s, ETA), a summary, a training log, checkpoints, --resume and Ctrl-C.
import { Command } from 'commander';
import { InputError } from '../../core/errors.js';
import { distill, type DistillOptions } from '../../passes/distill/distill.js';
import { deviceOptions, intOption, numberOption } from '../options.js';
import { Output, table } from '../output.js';

/** The CLI's options: the pass's, with the ones the command line spells differently. */
type DistillCliOptions = Omit<DistillOptions, 'studentLayerIds' | 'keepSparsity' | 'maxSeconds' | 'signal' | 'onStep'> & {
  studentLayerIds?: string;
  keepSparsity?: boolean;
  maxMinutes?: number;
  output: string;
  json?: boolean;
  quiet?: boolean;
};

export function distillCommand(): Command {
  return deviceOptions(new Command('distill'), { rankDevices: false })
    .description('distill a student (a pruned checkpoint, or a subset of the teacher\'s layers) to match its teacher')
    .requiredOption('--teacher <dir>', 'teacher: a Hugging Face folder')
    .option('--student <dir>', 'student: a Hugging Face folder of the same architecture (e.g. a pruned model)')
    .option('--student-layers <n>', 'student: n evenly spaced layers of the teacher', intOption('--student-layers', 1))
    .option('--student-layer-ids <ids>', 'student: these teacher layers, e.g. 0,3')
    .requiredOption('--data <file>', 'training text, one document per line')
    .option('--eval-data <file>', 'held-out text: KL / top-1 / perplexity against the teacher before, during and after')
    .option('--eval-every <n>', 'evaluate every n steps', intOption('--eval-every', 1))
    .option('--eval-limit <n>', 'use only the first n documents of --eval-data', intOption('--eval-limit', 1))
    .option('--steps <n>', 'optimizer steps', intOption('--steps', 1), 800)
    .option('--batch <n>', 'sequences per step', intOption('--batch', 1), 16)
    .option('--seq-len <n>', 'tokens per packed sequence (default: min(128, context))', intOption('--seq-len', 2))
    .option('--lr <f>', 'peak learning rate (AdamW)', numberOption('--lr', Number.MIN_VALUE), 3e-4)
    .option('--warmup <n>', 'linear warmup steps (default: 5% of --steps)', intOption('--warmup', 0))
    .option('--temperature <t>', 'distillation temperature T (loss: T^2 KL at T)', numberOption('--temperature', Number.MIN_VALUE), 2)
    .option('--alpha <a>', 'weight of next-token cross-entropy on the data', numberOption('--alpha', 0), 0.1)
    .option('--hidden-loss <w>', 'add w x the mean squared difference between each student layer\'s output and its teacher layer\'s', numberOption('--hidden-loss', 0))
    .option('--weight-decay <f>', 'AdamW weight decay (not on norms and biases)', numberOption('--weight-decay', 0), 0.01)
    .option('--clip-norm <f>', 'clip the global gradient norm (0: off)', numberOption('--clip-norm', 0), 1)
    .option('--seed <n>', 'data order seed', intOption('--seed', 0), 0)
    .option('--keep-sparsity', 'pruned weights stay exactly zero (gradients and updates masked)')
    .option('--max-minutes <m>', 'stop training after this long (the schedule still follows --steps)', numberOption('--max-minutes', Number.MIN_VALUE))
    .option('--checkpoint-every <n>', 'write a resumable checkpoint every n steps', intOption('--checkpoint-every', 1))
    .option('--checkpoint-dir <dir>', 'where checkpoints go (default: <output>.ckpt)')
    .option('--resume', 'continue from the checkpoint')
    .requiredOption('-o, --output <dir>', 'Hugging Face folder of the trained student')
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress bar')
    .addHelpText(
      'after',
      '\nExample:\n  $ llmopt distill --teacher path/to/hf-model --student out/m-24 --data train.txt --eval-data eval.txt \\\n      --steps 800 --batch 16 --seq-len 128 --lr 3e-4 --temperature 2 --keep-sparsity -o out/m-24-distilled\n  $ llmopt distill --teacher path/to/hf-model --student-layers 2 --data train.txt --steps 1500 -o out/draft',
    )
    .action(async (o: DistillCliOptions) => {
      const out = new Output(o);
      let layerIds: number[] | undefined;
      if (o.studentLayerIds) {
        layerIds = o.studentLayerIds.split(',').map((x) => Number(x.trim()));
        if (layerIds.some((x) => !Number.isInteger(x) || x < 0)) throw new InputError(`--student-layer-ids ${o.studentLayerIds}: expected comma-separated layer numbers`);
      }
      const bar = out.progress('distill');
      const abort = new AbortController();
      const onSigint = () => {
        out.log('\ninterrupted: writing a checkpoint after this step ...');
        abort.abort();
      };
      process.once('SIGINT', onSigint);
      const { output, json: _json, quiet: _quiet, maxMinutes, studentLayerIds: _ids, keepSparsity, ...passOptions } = o;
      const report = await distill(output, {
        ...passOptions,
        studentLayerIds: layerIds,
        keepSparsity: Boolean(keepSparsity),
        maxSeconds: maxMinutes === undefined ? undefined : maxMinutes * 60,
        signal: abort.signal,
        onStep: (s) => {
          bar.update(s.step, s.steps);
          if (s.eval) out.log(`step ${s.step}: eval KL ${s.eval.kl.toFixed(4)}, perplexity ${s.eval.perplexity.toFixed(3)}`);
        },
      }).finally(() => {
        bar.stop();
        process.off('SIGINT', onSigint);
      });
      if (o.json) return out.json(report);
      const fig = (e: typeof report.before) => (e ? `KL ${e.kl.toFixed(4)}, top-1 ${e.top1.toFixed(3)}, perplexity ${e.perplexity.toFixed(3)} (teacher ${e.teacherPerplexity.toFixed(3)})` : '-');
      out.result(
        table([
          ['output', report.output],
          ['student', report.student],
          ['steps', `${report.steps}${report.stoppedEarly ? ` (stopped: ${report.stoppedEarly})` : ''}`],
          ['tokens', `${report.tokens.toLocaleString('en-US')} in ${report.seconds.toFixed(1)} s (${report.tokensPerSecond.toFixed(0)} tokens/s)`],
          ['before', fig(report.before)],
          ['after', fig(report.after)],
          ...(report.sparsityKept === null ? [] : [['sparsity kept', report.sparsityKept ? 'yes, every pruned weight is still exactly 0' : 'NO']]),
          ['log', report.log],
        ]),
      );
    });
}
