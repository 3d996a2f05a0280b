// `llmopt synth`: a deterministic random checkpoint of any size and architecture (--arch: llama, qwen2, qwen3, gemma3,
// or a named published shape), for benchmarks (nothing large is committed: benchmark scripts generate what they measure);
// with --grow-from, a trained Llama grown to the shape the flags give, computing the same function (model/grow.ts).
import { Command } from 'commander';
import { basename, dirname, resolve } from 'node:path';
import { InputError } from '../../core/errors.js';
import { writeSyntheticFolder } from '../../model/synthetic.js';
import { growModel } from '../../model/grow.js';
import {
  defaultFfn,
  NAMED_SHAPES,
  SHAPE_FLAGS,
  SYNTH_ARCHES,
  synthSpec,
  type NamedShape,
  type SynthArch,
  type SynthKnobs,
} from '../../model/synthetic-shapes.js';
import { parameterCount } from '../../core/spec.js';
import { readModelSpec } from '../../model/architectures/index.js';
import { choiceOption, intOption, numberOption } from '../options.js';
import { Output, table } from '../output.js';

/** The command's options: the synthetic model's knobs (commander leaves --tied undefined when absent), arch and output. */
interface SynthOptions extends Omit<SynthKnobs, 'tied'> {
  arch: SynthArch;
  tied?: boolean;
  output: string;
  growFrom?: string;
  noise: number;
  json?: boolean;
}

/** Flags that --grow-from does not take: the source fixes them (its vocabulary, context, architecture). */
const NOT_GROWN: Array<[keyof SynthOptions, string]> = [
  ['arch', '--arch'],
  ['vocab', '--vocab'],
  ['context', '--context'],
  ['tied', '--tied'],
  ['slidingWindow', '--sliding-window'],
];

const ARCH_HELP =
  'llama | qwen2 | qwen3 | gemma3 (shaped by the flags below), or a named shape with the published config: ' +
  'qwen3-0.6b (Qwen3-0.6B), gemma-3-270m (Gemma-3-270M text)';

export function synthCommand(): Command {
  return new Command('synth')
    .description('write a deterministic random checkpoint (Hugging Face layout: Llama, Qwen2, Qwen3 or Gemma 3) for benchmarks')
    .requiredOption('-o, --output <dir>', 'folder to write')
    .option('--arch <name>', ARCH_HELP, choiceOption('--arch', SYNTH_ARCHES), 'llama')
    .option('--hidden <n>', 'hidden size', intOption('--hidden', 16), 768)
    .option('--layers <n>', 'decoder layers', intOption('--layers', 1), 12)
    .option('--heads <n>', 'attention heads', intOption('--heads', 1), 12)
    .option('--kv-heads <n>', 'key/value heads', intOption('--kv-heads', 1), 4)
    .option('--head-dim <n>', 'dims per head (default: hidden / heads)', intOption('--head-dim', 2))
    .option('--ffn <n>', 'MLP intermediate size (default: 8/3 hidden, rounded to 256)', intOption('--ffn', 1))
    .option('--vocab <n>', 'vocabulary size (>= 320, the bundled tokenizer)', intOption('--vocab', 320), 32000)
    .option('--context <n>', 'max_position_embeddings (named shapes: the published one)', intOption('--context', 2), 2048)
    .option('--dtype <dtype>', 'weight dtype', choiceOption('--dtype', ['float32', 'float16', 'bfloat16'] as const), 'float32')
    .option('--tied', 'tie lm_head to the embedding')
    .option(
      '--sliding-window <n>',
      'gemma3: window of the sliding layers (five to each global one; default 512)',
      intOption('--sliding-window', 1),
    )
    .option('--grow-from <model>', 'grow this trained Llama folder to the shape the flags give (same function; see README)')
    .option('--noise <s>', '--grow-from: std of noise on the new (zero) output-projection weights', numberOption('--noise', 0), 0)
    .option('--json', 'print the spec as JSON')
    .addHelpText(
      'after',
      '\nExamples:\n  $ llmopt synth --hidden 768 --layers 12 --heads 12 --kv-heads 4 --vocab 32000 -o out/synth' +
        '\n  $ llmopt synth --arch qwen3-0.6b -o out/qwen3-0.6b' +
        '\n  $ llmopt synth --grow-from models/aidreams-260k --hidden 768 --layers 12 --heads 12 --kv-heads 4 --noise 0.01 -o out/grown' +
        '\n  $ llmopt synth --arch gemma3 --hidden 64 --layers 6 --heads 2 --kv-heads 1 --vocab 512 --tied -o out/gemma3-small',
    )
    .action(async (o: SynthOptions, command: Command) => {
      const out = new Output(o);
      if (o.growFrom !== undefined) return grow(o, command, out);
      if (command.getOptionValueSource('noise') === 'cli') throw new InputError('--noise applies to --grow-from only');
      const named = o.arch in NAMED_SHAPES ? NAMED_SHAPES[o.arch as NamedShape] : null;
      if (named) {
        // A named shape is the published one: the flags that would change it are refused, not silently ignored.
        const given = Object.entries(SHAPE_FLAGS).filter(([key, flag]) => flag && command.getOptionValueSource(key) === 'cli');
        if (given.length > 0)
          throw new InputError(
            `--arch ${o.arch} is a fixed shape; for other values of ${given.map(([, f]) => f).join(', ')} use --arch ${named.architecture}`,
          );
      }
      const context = named && command.getOptionValueSource('context') !== 'cli' ? named.context : o.context;
      const { hidden, layers, heads, kvHeads, headDim, ffn, vocab, dtype, slidingWindow } = o;
      const knobs = { hidden, layers, heads, kvHeads, headDim, ffn, vocab, context, dtype, tied: Boolean(o.tied), slidingWindow };
      const { spec: synth, options } = synthSpec(o.arch, knobs);
      const target = resolve(o.output);
      await writeSyntheticFolder(target, synth, options);
      const spec = readModelSpec(target);
      const report = { output: o.output, parameters: parameterCount(spec), spec };
      if (o.json) return out.json(report);
      const c = synth.config;
      const shape =
        `hidden ${c.hidden_size}, ${c.num_hidden_layers} layers, heads ${c.num_attention_heads}/${c.num_key_value_heads} kv, ` +
        (o.arch === 'llama' ? '' : `head_dim ${spec.headDim}, `) +
        `ffn ${c.intermediate_size}, vocab ${c.vocab_size}, context ${c.max_position_embeddings}, ${c.torch_dtype}` +
        (o.arch !== 'llama' && c.tie_word_embeddings ? ', tied' : '');
      // --arch llama prints what synth printed before --arch existed.
      const arch = o.arch === 'llama' ? [] : [['architecture', `${spec.architecture}${named ? ` (${o.arch})` : ''}`]];
      out.result(
        table([
          ['output', `${basename(target)} in ${dirname(target)}`],
          ...arch,
          ['parameters', report.parameters.toLocaleString('en-US')],
          ['shape', shape],
        ]),
      );
    });
}

/** `synth --grow-from`: the grown checkpoint, reported as synth reports a random one. */
async function grow(o: SynthOptions, command: Command, out: Output): Promise<void> {
  const given = NOT_GROWN.filter(([key]) => command.getOptionValueSource(key) === 'cli').map(([, flag]) => flag);
  if (given.length > 0) throw new InputError(`${given.join(', ')} cannot be combined with --grow-from: the source fixes them`);
  const { hidden, layers, heads, kvHeads, headDim, noise, dtype } = o;
  const shape = { hidden, layers, heads, kvHeads, headDim, ffn: o.ffn ?? defaultFfn(hidden), noise, dtype };
  const target = resolve(o.output);
  const { spec } = await growModel(resolve(o.growFrom!), target, shape, { growFrom: o.growFrom, ...shape });
  const report = { output: o.output, source: o.growFrom, parameters: parameterCount(spec), spec };
  if (o.json) return out.json(report);
  out.result(
    table([
      ['output', `${basename(target)} in ${dirname(target)}`],
      ['grown from', `${o.growFrom} (noise ${noise})`],
      ['parameters', report.parameters.toLocaleString('en-US')],
      [
        'shape',
        `hidden ${spec.hiddenSize}, ${spec.numLayers} layers, heads ${spec.numHeads}/${spec.kvHeads} kv, head_dim ${spec.headDim}, ` +
          `ffn ${spec.intermediateSize}, vocab ${spec.vocabSize}, context ${spec.maxPositions}, ${spec.weightDtype}`,
      ],
    ]),
  );
}
