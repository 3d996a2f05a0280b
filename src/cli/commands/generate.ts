// `llmopt generate`: run an artifact on prompts with the KV-cache generation loop, streaming text.
import { Command } from 'commander';
import { InputError } from '../../errors.js';
import { DEVICES, type Device } from '../../runtime/device.js';
import { openModel } from '../../runtime/model.js';
import { checkPrompts, generate } from '../../runtime/generate.js';
import { loadTokenizer, readUtf8File, StreamingDecoder } from '../../formats/tokenizer.js';
import { choiceOption, collect, intOption, numberOption } from '../options.js';
import { Output } from '../output.js';

interface GenerateCliOptions {
  prompt: string[];
  promptFile?: string;
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  device: Device;
  threads?: number;
  json?: boolean;
  quiet?: boolean;
}

export function generateCommand(): Command {
  return new Command('generate')
    .description('generate text with an exported artifact (several prompts run as one padded batch)')
    .argument('<artifact>', 'artifact folder written by llmopt export')
    .option('-p, --prompt <text>', 'prompt (repeat for a batch)', collect, [])
    .option('--prompt-file <file>', 'UTF-8 file with one prompt per line')
    .option('-n, --max-new-tokens <n>', 'tokens to generate per prompt', intOption('--max-new-tokens', 0), 64)
    .option('--temperature <t>', '0 for greedy decoding', numberOption('--temperature', 0), 0)
    .option('--top-k <k>', 'sample from the k most likely tokens (0: all)', intOption('--top-k', 0), 0)
    .option('--top-p <p>', 'nucleus sampling threshold', numberOption('--top-p', 0, 1), 1)
    .option('--seed <n>', 'sampling seed', intOption('--seed', 0), 0)
    .option('--device <device>', `execution device: ${DEVICES.join(' | ')}`, choiceOption('--device', DEVICES), 'cpu')
    .option('--threads <n>', 'CPU threads (default: all cores)', intOption('--threads', 1))
    .option('--json', 'print ids, text and timings as JSON')
    .option('-q, --quiet', 'no logs')
    .addHelpText('after', '\nExample:\n  $ llmopt generate out/m --prompt "Once upon a time" --max-new-tokens 64\n  $ llmopt generate out/m -p "Hello" -p "The sea" --temperature 0.8 --top-p 0.9 --seed 7 --json')
    .action(async (artifact: string, o: GenerateCliOptions) => {
      const out = new Output(o);
      const texts = [...o.prompt];
      if (o.promptFile) texts.push(...readUtf8File(o.promptFile).split(/\r?\n/).filter((l) => l.length > 0));
      if (texts.length === 0) throw new InputError('no prompt: give --prompt or --prompt-file');
      const model = await openModel(artifact, { device: o.device, threads: o.threads });
      try {
        const tokenizer = loadTokenizer(artifact);
        const prompts = texts.map((t) => tokenizer.encode(t));
        checkPrompts(model, prompts);
        const streaming = !o.json && texts.length === 1;
        const stream = new StreamingDecoder(tokenizer);
        if (streaming) process.stdout.write(texts[0]!);
        const result = await generate(model, prompts, {
          maxNewTokens: o.maxNewTokens,
          sampling: { temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed },
          onToken: streaming ? (_row, id) => process.stdout.write(stream.push(id)) : undefined,
        });
        const generated = result.tokens.reduce((a, t) => a + t.length, 0);
        const timing = {
          promptTokens: result.promptTokens,
          generatedTokens: generated,
          prefillTokensPerSecond: result.promptTokens / result.prefillSeconds,
          decodeTokensPerSecond: result.decodeSteps > 0 ? (result.decodeSteps * prompts.length) / result.decodeSeconds : null,
        };
        if (o.json) {
          return out.json({
            device: model.device,
            model: model.description,
            outputs: texts.map((prompt, i) => ({
              prompt,
              promptIds: prompts[i],
              ids: result.tokens[i],
              text: tokenizer.decode(result.tokens[i]!),
              stopReason: result.stopReasons[i],
            })),
            ...timing,
          });
        }
        if (streaming) process.stdout.write(stream.flush() + '\n');
        else texts.forEach((t, i) => out.result(`[${i + 1}] ${t}${tokenizer.decode(result.tokens[i]!)}`));
        out.log(
          `${generated} tokens; prefill ${timing.prefillTokensPerSecond.toFixed(1)} tok/s` +
            (timing.decodeTokensPerSecond ? `, decode ${timing.decodeTokensPerSecond.toFixed(1)} tok/s` : '') +
            ` (${model.device}, ${model.description})`,
        );
      } finally {
        await model.release();
      }
    });
}
