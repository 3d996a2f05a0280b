// `llmopt export`: Hugging Face checkpoint -> ONNX artifact folder.
import { Command } from 'commander';
import { exportModel, LAYOUTS, type Layout } from '../../passes/export.js';
import { ATTENTION_FORMS, type AttentionForm } from '../../core/io.js';
import { choiceOption } from '../options.js';
import { formatBytes, Output, table } from '../output.js';

export function exportCommand(): Command {
  return new Command('export')
    .description('export a Hugging Face Llama checkpoint to an ONNX artifact folder with a KV cache')
    .argument('<model>', 'Hugging Face model folder (config.json, safetensors, tokenizer.json)')
    .requiredOption('-o, --output <dir>', 'artifact folder to write (written atomically)')
    .option('--attention <form>', 'fused: com.microsoft GroupQueryAttention (onnxruntime CPU/WebGPU/CUDA, onnxruntime-genai I/O); standard: ai.onnx ops only; inplace: the cache stays in llmopt\'s runtime, fastest batched decoding on CPU (llmopt only)', choiceOption('--attention', ATTENTION_FORMS), 'fused')
    .option('--layout <layout>', `folder layout: ${LAYOUTS.join(' | ')} (onnx/model.onnx + model.onnx_data, as transformers.js loads it)`, choiceOption('--layout', LAYOUTS), 'llmopt')
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress bar')
    .addHelpText('after', '\nExample:\n  $ llmopt export path/to/hf-model -o out/m\n  $ llmopt export path/to/hf-model -o out/m-web --attention standard --layout transformers.js')
    .action(async (model: string, o: { output: string; attention: AttentionForm; layout: Layout; json?: boolean; quiet?: boolean }) => {
      const out = new Output(o);
      const bar = out.progress('export');
      const report = await exportModel(model, o.output, { attention: o.attention, layout: o.layout, onProgress: bar.update }).finally(bar.stop);
      if (o.json) return out.json(report);
      out.result(
        table([
          ['output', report.output],
          ['attention', report.attention],
          ['layout', report.layout],
          ['parameters', report.parameters.toLocaleString('en-US')],
          ['model.onnx', formatBytes(report.modelBytes)],
          ['weights', formatBytes(report.dataBytes)],
          ['time', `${report.seconds.toFixed(2)} s`],
        ]),
      );
    });
}
