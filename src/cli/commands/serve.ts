// `llmopt serve`: an OpenAI-compatible HTTP server on an artifact, requests joining the continuous batch
// as slots free up; SIGTERM or SIGINT drains it (in flight finishes, new requests get 503) and exits 0.
import { basename, resolve } from 'node:path';
import { Command } from 'commander';
import { InputError } from '../../core/errors.js';
import { loadChatTemplate, type ChatTemplate } from '../../formats/chat-template.js';
import { loadTokenizer } from '../../formats/tokenizer.js';
import type { Device } from '../../runtime/device.js';
import { LiveScheduler, type TokenScheduler } from '../../runtime/live-scheduler.js';
import { SpeculativeQueue } from '../../runtime/speculative-queue.js';
import { openModel } from '../../runtime/model.js';
import { openDraft, releaseDraft, type Draft } from '../../runtime/speculative.js';
import { Engine } from '../../serve/engine.js';
import { Metrics } from '../../serve/metrics.js';
import { buildServer } from '../../serve/server.js';
import { deviceOptions, intOption } from '../options.js';
import { Output } from '../output.js';

interface ServeCliOptions {
  port: number;
  host: string;
  slots: number;
  context?: number;
  apiKey?: string;
  draft?: string;
  draftTokens: number;
  modelName?: string;
  bodyLimit: number;
  device: Device;
  rankDevices?: Device[];
  threads?: number;
  json?: boolean;
  quiet?: boolean;
}

export function serveCommand(): Command {
  return deviceOptions(new Command('serve'), { rankDevices: true })
    .description('serve an artifact over an OpenAI-compatible HTTP API (completions, chat completions, streaming)')
    .argument('<artifact>', 'artifact folder written by llmopt export or quantize')
    .option('--port <n>', 'TCP port (0: any free port, printed on start)', intOption('--port', 0), 8080)
    .option('--host <address>', 'address to bind (127.0.0.1: this machine only)', '127.0.0.1')
    .option('--slots <n>', 'requests decoded together (continuous batching)', intOption('--slots', 1), 4)
    .option('--context <n>', "tokens per request, prompt and output (default: the model's context)", intOption('--context', 2))
    .option(
      '--draft <artifact>',
      'speculative decoding with this draft artifact, or prompt-lookup (n-gram matches, no model); requests then run one at a time',
    )
    .option('--draft-tokens <k>', 'tokens the draft proposes per target pass', intOption('--draft-tokens', 1), 4)
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on every request but /health')
    .option('--model-name <id>', 'the model id clients use (default: the artifact folder name)')
    .option('--body-limit <bytes>', 'largest request body (413 above it)', intOption('--body-limit', 1024), 1 << 20)
    .option('--json', 'print the address as JSON')
    .option('-q, --quiet', 'no logs')
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  $ llmopt serve out/m-int4 --port 8080 --slots 8\n' +
        '  $ curl http://127.0.0.1:8080/v1/completions -H "content-type: application/json" \\\n' +
        '      -d \'{"prompt": "Once upon a time", "max_tokens": 32, "temperature": 0}\'',
    )
    .action(async (artifact: string, o: ServeCliOptions) => {
      const out = new Output(o);
      const model = await openModel(artifact, { device: o.device, threads: o.threads, rankDevices: o.rankDevices });
      let scheduler: TokenScheduler | null = null;
      let draft: Draft | null = null;
      try {
        if (o.draft) draft = await openDraft(o.draft, { device: o.device, threads: o.threads });
        if (o.context !== undefined && o.context > model.spec.maxPositions)
          throw new InputError(`--context ${o.context}: the model's context is ${model.spec.maxPositions} tokens`);
        const tokenizer = loadTokenizer(artifact);
        let chat: ChatTemplate | null = null;
        try {
          chat = loadChatTemplate(tokenizer);
        } catch (e) {
          if (!(e instanceof InputError)) throw e;
          out.log(`no chat template: /v1/chat/completions answers 400 (${e.message})`);
        }
        scheduler = draft
          ? new SpeculativeQueue(model, draft, { draftTokens: o.draftTokens, capacity: o.context })
          : new LiveScheduler(model, { slots: o.slots, capacity: o.context });
        const engine = new Engine(scheduler, tokenizer, new Metrics());
        const modelName = o.modelName ?? basename(resolve(artifact));
        const server = buildServer({ modelName, engine, chat, apiKey: o.apiKey, bodyLimit: o.bodyLimit });
        const stopped = new Promise<string>((done) => {
          for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => done(signal));
        });
        let address: string;
        try {
          address = await server.app.listen({ port: o.port, host: o.host });
        } catch (e) {
          throw new InputError(`cannot listen on ${o.host}:${o.port} (${(e as Error).message})`);
        }
        if (o.json) out.json({ url: address, model: modelName, slots: scheduler.slots, context: engine.context, chat: chat !== null });
        else out.result(`listening on ${address} (model ${modelName}, ${scheduler.slots} slots, context ${engine.context})`);
        const signal = await stopped;
        out.log(`${signal}: draining`);
        await server.drain();
        await server.app.close();
      } finally {
        await scheduler?.close();
        await model.release();
        await releaseDraft(draft);
      }
    });
}
