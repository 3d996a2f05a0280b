// `llmopt synth`: a deterministic random Llama checkpoint of any size, for benchmarks (nothing large is
// committed: benchmark scripts generate what they measure).
import { Command } from 'commander';
import { basename, dirname, resolve } from 'node:path';
import { writeSyntheticFolder } from '../../model/synthetic.js';
import { parameterCount } from '../../core/spec.js';
import { readModelSpec } from '../../model/architectures/index.js';
import { choiceOption, intOption } from '../options.js';
import { Output, table } from '../output.js';

interface SynthOptions {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn?: number;
  vocab: number;
  context: number;
  dtype: 'float32' | 'float16' | 'bfloat16';
  tied?: boolean;
  output: string;
  json?: boolean;
}

export function synthCommand(): Command {
  return new Command('synth')
    .description('write a deterministic random Llama checkpoint (Hugging Face layout) for benchmarks')
    .requiredOption('-o, --output <dir>', 'folder to write')
    .option('--hidden <n>', 'hidden size', intOption('--hidden', 16), 768)
    .option('--layers <n>', 'decoder layers', intOption('--layers', 1), 12)
    .option('--heads <n>', 'attention heads', intOption('--heads', 1), 12)
    .option('--kv-heads <n>', 'key/value heads', intOption('--kv-heads', 1), 4)
    .option('--ffn <n>', 'MLP intermediate size (default: 8/3 hidden, rounded to 256)', intOption('--ffn', 1))
    .option('--vocab <n>', 'vocabulary size (>= 320, the bundled tokenizer)', intOption('--vocab', 320), 32000)
    .option('--context <n>', 'max_position_embeddings', intOption('--context', 2), 2048)
    .option('--dtype <dtype>', 'weight dtype', choiceOption('--dtype', ['float32', 'float16', 'bfloat16'] as const), 'float32')
    .option('--tied', 'tie lm_head to the embedding')
    .option('--json', 'print the spec as JSON')
    .addHelpText('after', '\nExample:\n  $ llmopt synth --hidden 768 --layers 12 --heads 12 --kv-heads 4 --vocab 32000 -o out/synth')
    .action(async (o: SynthOptions) => {
      const out = new Output(o);
      const ffn = o.ffn ?? Math.ceil((o.hidden * 8) / 3 / 256) * 256;
      const target = resolve(o.output);
      // Seeds come from the name, so one name means one model per shape.
      const name = `synth-h${o.hidden}-l${o.layers}-a${o.heads}-kv${o.kvHeads}-f${ffn}-v${o.vocab}`;
      const config = {
        hidden_size: o.hidden,
        num_hidden_layers: o.layers,
        num_attention_heads: o.heads,
        num_key_value_heads: o.kvHeads,
        intermediate_size: ffn,
        vocab_size: o.vocab,
        max_position_embeddings: o.context,
        rope_theta: 10000,
        rope_scaling: null,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: Boolean(o.tied),
        attention_bias: false,
        mlp_bias: false,
        torch_dtype: o.dtype,
      };
      const { hidden, layers, heads, kvHeads, vocab, context, dtype } = o;
      const options = { name, hidden, layers, heads, kvHeads, ffn, vocab, context, dtype, tied: Boolean(o.tied) };
      await writeSyntheticFolder(target, { name, shards: 1, config }, options);
      const spec = readModelSpec(target);
      const report = { output: o.output, parameters: parameterCount(spec), spec };
      if (o.json) return out.json(report);
      out.result(
        table([
          ['output', `${basename(target)} in ${dirname(target)}`],
          ['parameters', report.parameters.toLocaleString('en-US')],
          [
            'shape',
            `hidden ${o.hidden}, ${o.layers} layers, heads ${o.heads}/${o.kvHeads} kv, ffn ${ffn}, vocab ${o.vocab}, ` +
              `context ${o.context}, ${o.dtype}`,
          ],
        ]),
      );
    });
}
