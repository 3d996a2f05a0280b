// `llmopt distill`: knowledge distillation of a pruned or shallower student from its teacher, with a
// progress bar (loss, tokens/s, ETA), a summary, a training log, checkpoints, --resume and Ctrl-C.
import { passAction, passCommand } from '../pass-command.js';
import { table } from '../output.js';
import { quantizeFlags } from '../../passes/quantize/qat.js';

export function distillCommand() {
  return passCommand('distill')
    .description("distill a student (a pruned checkpoint, or a subset of the teacher's layers) to match its teacher")
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  $ llmopt distill --teacher path/to/hf-model --student out/m-24 --data train.txt --eval-data eval.txt \\\n' +
        '      --steps 800 --batch 16 --seq-len 128 --lr 3e-4 --temperature 2 --keep-sparsity -o out/m-24-distilled\n' +
        '  $ llmopt distill --teacher path/to/hf-model --student-layers 2 --data train.txt --steps 1500 -o out/draft\n' +
        '  $ llmopt distill --teacher path/to/hf-model --quantize-aware int4 --data train.txt --steps 100 --lr 1e-4 \\\n' +
        '      --temperature 1 --alpha 0 -o out/m-qat && llmopt quantize out/m-qat --to int4 -o out/m-int4',
    )
    .action(
      passAction('distill', {
        interruptible: true,
        print: (report, o, out) => {
          if (o.json) return out.json(report);
          const fig = (e: typeof report.before) =>
            e
              ? `KL ${e.kl.toFixed(4)}, top-1 ${e.top1.toFixed(3)}, perplexity ${e.perplexity.toFixed(3)} ` +
                `(teacher ${e.teacherPerplexity.toFixed(3)})`
              : '-';
          out.result(
            table([
              ['output', report.output],
              ['student', report.student],
              ['steps', `${report.steps}${report.stoppedEarly ? ` (stopped: ${report.stoppedEarly})` : ''}`],
              [
                'tokens',
                `${report.tokens.toLocaleString('en-US')} in ${report.seconds.toFixed(1)} s ` +
                  `(${report.tokensPerSecond.toFixed(0)} tokens/s)`,
              ],
              ['before', fig(report.before)],
              ['after', fig(report.after)],
              ...(report.sparsityKept === null
                ? []
                : [['sparsity kept', report.sparsityKept ? 'yes, every pruned weight is still exactly 0' : 'NO']]),
              ...(report.quantizeAware
                ? [
                    [
                      'quantize with',
                      `llmopt quantize ${report.output} ${quantizeFlags(report.quantizeAware)} (the rounding it was trained through)`,
                    ],
                  ]
                : []),
              ['log', report.log],
            ]),
          );
        },
      }),
    );
}
