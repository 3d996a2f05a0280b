// `llmopt export`: Hugging Face checkpoint -> ONNX artifact folder.
import { passAction, passCommand } from '../pass-command.js';
import { formatBytes, table } from '../output.js';
import { ggufTable } from './gguf-report.js';

export function exportCommand() {
  return passCommand('export')
    .description('export a Hugging Face checkpoint to an ONNX artifact folder with a KV cache, or to a llama.cpp GGUF file')
    .argument('<model>', 'Hugging Face model folder (config.json, safetensors, tokenizer.json)')
    .addHelpText(
      'after',
      '\nExample:\n  $ llmopt export path/to/hf-model -o out/m\n' +
        '  $ llmopt export path/to/hf-model -o out/m-web --attention standard --layout transformers.js\n' +
        '  $ llmopt export path/to/hf-model --format gguf --dtype f16 -o out/m-f16.gguf',
    )
    .action(
      passAction('export', {
        print: (report, o, out) => {
          if (o.json) return out.json(report);
          if (report.format === 'gguf') return out.result(ggufTable(report));
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
        },
      }),
    );
}
