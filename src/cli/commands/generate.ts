// `llmopt generate`: run an artifact on prompts with the KV-cache generation loop, streaming text.
import { Command } from 'commander';
import { InputError } from '../../core/errors.js';
import type { Device } from '../../runtime/device.js';
import { openModel } from '../../runtime/model.js';
import { checkPrompts, generate } from '../../runtime/generate.js';
import { checkDraft, generateWithDraft, openDraft, releaseDraft } from '../../runtime/speculative.js';
import { loadTokenizer, readUtf8File, StreamingDecoder } from '../../formats/tokenizer.js';
import { loadChatTemplate } from '../../formats/chat-template.js';
import { collect, deviceOptions, intOption, numberOption } from '../options.js';
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
  rankDevices?: Device[];
  threads?: number;
  draft?: string;
  draftTokens: number;
  chat?: boolean;
  json?: boolean;
  quiet?: boolean;
}

export function generateCommand(): Command {
  return deviceOptions(new Command('generate'), { rankDevices: true })
    .description('generate text with an exported artifact (several prompts run as one padded batch)')
    .argument('<artifact>', 'artifact folder written by llmopt export')
    .option('-p, --prompt <text>', 'prompt (repeat for a batch)', collect, [])
    .option('--prompt-file <file>', 'UTF-8 file with one prompt per line')
    .option('-n, --max-new-tokens <n>', 'tokens to generate per prompt', intOption('--max-new-tokens', 0), 64)
    .option('--temperature <t>', '0 for greedy decoding', numberOption('--temperature', 0), 0)
    .option('--top-k <k>', 'sample from the k most likely tokens (0: all)', intOption('--top-k', 0), 0)
    .option('--top-p <p>', 'nucleus sampling threshold', numberOption('--top-p', 0, 1), 1)
    .option('--seed <n>', 'sampling seed', intOption('--seed', 0), 0)
    .option(
      '--draft <artifact>',
      'speculative decoding with this draft artifact (same vocabulary), or prompt-lookup (n-gram matches in the text so far); ' +
        'prompts run one at a time',
    )
    .option('--draft-tokens <k>', 'tokens the draft proposes per target pass', intOption('--draft-tokens', 1), 4)
    .option('--chat', "each prompt is a user message, rendered with the model's chat template (stops at its end of turn)")
    .option('--json', 'print ids, text and timings as JSON')
    .option('-q, --quiet', 'no logs')
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  $ llmopt generate out/m --prompt "Once upon a time" --max-new-tokens 64\n' +
        '  $ llmopt generate out/m -p "Hello" -p "The sea" --temperature 0.8 --top-p 0.9 --seed 7 --json\n' +
        '  $ llmopt generate out/m --chat --prompt "What is the capital of France?"\n' +
        '  $ llmopt generate out/m --draft out/m-int4 --draft-tokens 4 --prompt "Once upon a time"\n' +
        '  $ llmopt generate out/m --draft prompt-lookup --prompt-file edit-this.txt',
    )
    .action(async (artifact: string, o: GenerateCliOptions) => {
      const out = new Output(o);
      const texts = [...o.prompt];
      if (o.promptFile)
        texts.push(
          ...readUtf8File(o.promptFile)
            .split(/\r?\n/)
            .filter((l) => l.length > 0),
        );
      if (texts.length === 0) throw new InputError('no prompt: give --prompt or --prompt-file');
      const model = await openModel(artifact, { device: o.device, threads: o.threads, rankDevices: o.rankDevices });
      const draft = o.draft
        ? await openDraft(o.draft, { device: o.device, threads: o.threads }).catch(async (e) => {
            await model.release();
            throw e;
          })
        : null;
      try {
        if (draft) checkDraft(model, draft);
        const tokenizer = loadTokenizer(artifact);
        const chat = o.chat ? loadChatTemplate(tokenizer) : null;
        const prompts = texts.map((t) => (chat ? chat.encode([{ role: 'user', content: t }]) : tokenizer.encode(t)));
        checkPrompts(model, prompts);
        const streaming = !o.json && texts.length === 1;
        const stream = new StreamingDecoder(tokenizer);
        // A chat reply is printed alone; a plain continuation follows its prompt.
        if (streaming && !chat) process.stdout.write(texts[0]!);
        const options = {
          maxNewTokens: o.maxNewTokens,
          stopTokens: chat ? [...new Set([...model.spec.eosTokenIds, ...chat.endOfTurnIds])] : undefined,
          sampling: { temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed },
          onToken: streaming ? (_row: number, id: number) => void process.stdout.write(stream.push(id)) : undefined,
        };
        const drafted = draft ? await generateWithDraft(model, draft, prompts, { ...options, draftTokens: o.draftTokens }) : null;
        const result = drafted ?? (await generate(model, prompts, options));
        const speculative = drafted
          ? {
              draftTokens: o.draftTokens,
              acceptanceRate: drafted.accepted / drafted.proposed,
              tokensPerTargetPass: drafted.decodeTokens / drafted.targetPasses,
            }
          : null;
        const generated = result.tokens.reduce((a, t) => a + t.length, 0);
        const timing = {
          promptTokens: result.promptTokens,
          generatedTokens: generated,
          prefillTokensPerSecond: result.promptTokens / result.prefillSeconds,
          decodeTokensPerSecond: result.decodeTokens > 0 ? result.decodeTokens / result.decodeSeconds : null,
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
            ...(speculative ? { speculative } : {}),
          });
        }
        if (streaming) process.stdout.write(`${stream.flush()}\n`);
        else texts.forEach((t, i) => out.result(`[${i + 1}] ${chat ? '' : t}${tokenizer.decode(result.tokens[i]!)}`));
        out.log(
          `${generated} tokens; prefill ${timing.prefillTokensPerSecond.toFixed(1)} tok/s` +
            (timing.decodeTokensPerSecond ? `, decode ${timing.decodeTokensPerSecond.toFixed(1)} tok/s` : '') +
            (speculative
              ? `, draft acceptance ${speculative.acceptanceRate.toFixed(3)}, ` +
                `${speculative.tokensPerTargetPass.toFixed(2)} tokens per target pass`
              : '') +
            ` (${model.device}, ${model.description})`,
        );
      } finally {
        await model.release();
        await releaseDraft(draft);
      }
    });
}
