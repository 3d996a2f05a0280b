// `llmopt quantize`: fp16 / int8 / int4 (RTN or GPTQ) / w8a8 weights as an ONNX artifact or a
// compressed-tensors checkpoint; a report of bytes per tensor kind, and with --eval the quality cost.
import { Command } from 'commander';
import { compareModels } from '../../eval/compare.js';
import { quantize, QUANT_FORMATS, QUANT_METHODS, QUANT_TARGETS, type QuantFormat, type QuantMethod, type QuantTarget } from '../../passes/quantize/quantize.js';
import type { AccuracyLevel } from '../../passes/quantize/matmul-nbits.js';
import { ATTENTION_FORMS, type AttentionForm } from '../../core/io.js';
import { choiceOption, collect, intOption, numberOption } from '../options.js';
import { formatBytes, Output, table } from '../output.js';

interface QuantizeCliOptions {
  to: QuantTarget;
  method: QuantMethod;
  blockSize: number;
  asymmetric?: boolean;
  accuracyLevel: number;
  exclude: string[];
  quantizeEmbeddings?: boolean;
  format: QuantFormat;
  attention: AttentionForm;
  calib?: string;
  calibSamples: number;
  calibSeqLen?: number;
  actOrder?: boolean;
  dampening: number;
  eval?: string;
  output: string;
  json?: boolean;
  quiet?: boolean;
}

export function quantizeCommand(): Command {
  return new Command('quantize')
    .description('quantize weights (fp16, int8, int4 round-to-nearest or GPTQ, w8a8) into an ONNX artifact or a compressed-tensors checkpoint')
    .argument('<model>', 'Hugging Face model folder (any float dtype; a pruned model too)')
    .requiredOption('-o, --output <dir>', 'output folder')
    .requiredOption('--to <precision>', QUANT_TARGETS.join(' | '), choiceOption('--to', QUANT_TARGETS))
    .option('--method <method>', 'rtn (round-to-nearest) | gptq (error-compensated, needs --calib)', choiceOption('--method', QUANT_METHODS), 'rtn')
    .option('--block-size <n>', 'int4/int8: weights per block along the input dimension (16, 32, 64, 128)', intOption('--block-size', 1), 32)
    .option('--asymmetric', 'int4/int8: a zero point per block (default: symmetric)')
    .option('--accuracy-level <n>', 'MatMulNBits accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute', intOption('--accuracy-level', 0), 0)
    .option('--exclude <glob>', 'keep matching modules in float, e.g. "model.layers.0.*" or "*down_proj" (repeatable)', collect, [])
    .option('--quantize-embeddings', 'also quantize the embedding (GatherBlockQuantized) and lm_head')
    .option('--format <format>', 'onnx: an artifact llmopt runs; compressed-tensors: a Hugging Face folder vLLM loads', choiceOption('--format', QUANT_FORMATS), 'onnx')
    .option('--attention <form>', 'attention form of the ONNX artifact', choiceOption('--attention', ATTENTION_FORMS), 'fused')
    .option('--calib <file>', 'calibration text for GPTQ, one document per line')
    .option('--calib-samples <n>', 'calibration windows', intOption('--calib-samples', 1), 128)
    .option('--calib-seq-len <n>', 'tokens per calibration window (default: min(128, context))', intOption('--calib-seq-len', 2))
    .option('--act-order', 'GPTQ: process columns by decreasing Hessian diagonal (static groups)')
    .option('--dampening <f>', 'GPTQ Hessian dampening, a fraction of the mean diagonal', numberOption('--dampening', 0), 0.01)
    .option('--eval <file>', 'after quantizing, measure KL / top-1 / perplexity against the source on this text')
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress bars')
    .addHelpText(
      'after',
      '\nExample:\n  $ llmopt quantize path/to/hf-model --to int4 --block-size 32 -o out/m-int4\n  $ llmopt quantize path/to/hf-model --to int4 --method gptq --calib train.txt --eval eval.txt -o out/m-gptq\n  $ llmopt quantize path/to/hf-model --to int8 --format compressed-tensors -o out/m-w8-hf',
    )
    .action(async (model: string, o: QuantizeCliOptions) => {
      const out = new Output(o);
      const bars = { calibrate: out.progress('gptq layers'), write: out.progress('write tensors') };
      const report = await quantize(model, o.output, {
        to: o.to,
        method: o.method,
        blockSize: o.blockSize,
        symmetric: !o.asymmetric,
        accuracyLevel: o.accuracyLevel as AccuracyLevel,
        exclude: o.exclude,
        quantizeEmbeddings: Boolean(o.quantizeEmbeddings),
        format: o.format,
        attention: o.attention,
        calib: o.calib,
        calibSamples: o.calibSamples,
        calibSeqLen: o.calibSeqLen,
        actOrder: o.actOrder,
        dampening: o.dampening,
        onProgress: (done, total, phase) => {
          if (phase === 'write') bars.calibrate.stop();
          bars[phase].update(done, total);
        },
      }).finally(() => {
        bars.calibrate.stop();
        bars.write.stop();
      });
      let quality = null;
      if (o.eval) {
        const bar = out.progress('eval');
        quality = await compareModels(o.output, model, o.eval, { onProgress: bar.update }).finally(bar.stop);
      }
      if (o.json) return out.json({ ...report, eval: quality });
      const scheme = report.bits ? `int${report.bits}, blocks of ${report.blockSize}, ${report.symmetric ? 'symmetric' : 'asymmetric'}, ${report.method}` : report.to;
      const rows: Array<Array<string | number>> = [
        ['output', `${report.output} (${report.format})`],
        ['scheme', scheme],
        ['quantized layers', report.quantized],
        ...(report.excluded.length ? [['kept float', report.excluded.join(', ')]] : []),
        ['', 'before -> after'],
        ...Object.entries(report.bytes).map(([k, v]) => [`  ${k}`, `${formatBytes(v!.before)} -> ${formatBytes(v!.after)}`]),
        ['total', `${formatBytes(report.bytesBefore)} -> ${formatBytes(report.bytesAfter)} (${report.compression.toFixed(2)}x smaller)`],
        ['time', `${report.seconds.toFixed(1)} s`],
      ];
      if (quality?.reference) rows.push(['perplexity', `${quality.perplexity.toFixed(3)} (source ${quality.reference.perplexity.toFixed(3)})`], ['KL vs source', quality.reference.kl.toFixed(5)], ['top-1 vs source', quality.reference.top1.toFixed(4)]);
      out.result(table(rows));
    });
}
