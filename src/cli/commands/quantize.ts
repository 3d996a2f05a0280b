// `llmopt quantize`: fp16 / int8 / int4 (RTN or GPTQ) / w8a8 weights as an ONNX artifact or a
// compressed-tensors checkpoint; a report of bytes per tensor kind, and with --eval the quality cost.
import { passAction, passCommand } from '../pass-command.js';
import { formatBytes, qualityRows, table } from '../output.js';
import { ggufTable } from './gguf-report.js';

/** How the report's MatMulNBits computes, in words. */
const ACTIVATIONS = {
  float: 'float activations',
  int8: 'int8 activations (accuracy level 4)',
  'int8+residual': 'int8 activations and their rounding residual (accuracy level 4)',
} as const;

export function quantizeCommand() {
  return passCommand('quantize')
    .description(
      'quantize weights (fp16, int8, int4 round-to-nearest or GPTQ, w8a8) into an ONNX artifact or a compressed-tensors checkpoint',
    )
    .argument('<model>', 'Hugging Face model folder (any float dtype; a pruned model too)')
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  $ llmopt quantize path/to/hf-model --to int4 --block-size 32 -o out/m-int4\n' +
        '  $ llmopt quantize path/to/hf-model --to int4 --method gptq --calib train.txt --eval eval.txt -o out/m-gptq\n' +
        '  $ llmopt quantize path/to/hf-model --to int8 --format compressed-tensors -o out/m-w8-hf\n' +
        '  $ llmopt quantize path/to/hf-model --format gguf --to q4_k_m -o out/m-q4km.gguf',
    )
    .action(
      passAction('quantize', {
        labels: { calibrate: 'gptq layers', write: 'write tensors', eval: 'eval' },
        print: (report, o, out) => {
          if (o.json) return out.json(report);
          if (report.format === 'gguf') {
            const extra: Array<[string, string]> = [['target', `${report.to} (${report.method})`]];
            if (report.fallbacks.length) extra.push(['fallbacks', report.fallbacks.join('; ')]);
            if (report.excluded.length) extra.push(['kept f32', report.excluded.join(', ')]);
            if (report.mix) extra.push([`--mix ${report.mix.policy}`, report.mix.raised.join('; ') || 'nothing raised']);
            for (const w of report.warnings) extra.push(['warning', w]);
            return out.result(ggufTable(report, extra));
          }
          const quality = report.eval;
          const scheme = report.bits
            ? `int${report.bits}, blocks of ${report.blockSize}, ${report.symmetric ? 'symmetric' : 'asymmetric'}, ${report.method}` +
              (report.activations ? `; ${ACTIVATIONS[report.activations]}` : '')
            : report.to;
          const rows: Array<Array<string | number>> = [
            ['output', `${report.output} (${report.format})`],
            ['scheme', scheme],
            ['quantized layers', report.quantized],
            ...(report.excluded.length ? [['kept float', report.excluded.join(', ')]] : []),
            ...(report.mix
              ? [
                  [
                    `--mix ${report.mix.policy}`,
                    `${report.mix.bitsPerWeight.toFixed(3)} bits per linear weight; int8: ${report.mix.raised.join(', ') || 'none'}`,
                  ],
                ]
              : []),
            ['', 'before -> after'],
            ...Object.entries(report.bytes).map(([k, v]) => [`  ${k}`, `${formatBytes(v!.before)} -> ${formatBytes(v!.after)}`]),
            [
              'total',
              `${formatBytes(report.bytesBefore)} -> ${formatBytes(report.bytesAfter)} (${report.compression.toFixed(2)}x smaller)`,
            ],
            ['time', `${report.seconds.toFixed(1)} s`],
            ...report.warnings.map((w) => ['warning', w]),
          ];
          rows.push(...qualityRows(quality, 'source'));
          out.result(table(rows));
        },
      }),
    );
}
