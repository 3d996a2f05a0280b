// The CLI entry: registers commands, and is the one place that turns errors into exit codes
// (2 bad input, 1 failed gate or internal failure).
import { Command, CommanderError } from 'commander';
import { LlmoptError } from '../core/errors.js';
import { TOOL_VERSION } from '../formats/artifact.js';
import { benchCommand } from './commands/bench.js';
import { evalCommand } from './commands/eval.js';
import { exportCommand } from './commands/export.js';
import { generateCommand } from './commands/generate.js';
import { inspectCommand } from './commands/inspect.js';
import { runCommand } from './commands/run.js';
import { serveCommand } from './commands/serve.js';
import { pruneCommand } from './commands/prune.js';
import { quantizeCommand } from './commands/quantize.js';
import { synthCommand } from './commands/synth.js';
import { shardCommand } from './commands/shard.js';
import { distillCommand } from './commands/distill.js';
import { devicesCommand } from './commands/devices.js';

export function program(): Command {
  const p = new Command('llmopt')
    .description('make large language models small and fast: inspect, export, generate, eval, quantize, prune, bench')
    .version(TOOL_VERSION)
    .showHelpAfterError('(add --help for usage)');
  for (const c of [
    runCommand(),
    inspectCommand(),
    exportCommand(),
    generateCommand(),
    evalCommand(),
    quantizeCommand(),
    pruneCommand(),
    shardCommand(),
    distillCommand(),
    synthCommand(),
    benchCommand(),
    devicesCommand(),
    serveCommand(),
  ])
    p.addCommand(c);
  // Every subcommand reports usage errors through exitOverride so main() owns the exit code.
  const override = (c: Command) => {
    c.exitOverride();
    c.commands.forEach(override);
  };
  override(p);
  return p;
}

/** Runs the CLI and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  // A reader that closes the pipe early (`llmopt ... | head`) is not an error of ours.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  try {
    await program().parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version "errors" are normal exits; commander already printed usage problems.
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof LlmoptError) {
      process.stderr.write(`llmopt: ${e.message}\n`);
      return e.exitCode;
    }
    process.stderr.write(`llmopt: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}
