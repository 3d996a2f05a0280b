// Option parsers for the commands that are not passes (generate, inspect, synth, run): each rejects a bad
// value with an InputError naming the option, with the same rules as the passes' declared options.
import type { Command } from 'commander';
import { parseChoice, parseInteger, parseNumber, rankDevices } from '../passes/options.js';
import { DEVICES } from '../runtime/device.js';

export const intOption =
  (flag: string, min = 0) =>
  (value: string) =>
    parseInteger(flag, value, min);
export const numberOption =
  (flag: string, min = -Infinity, max = Infinity) =>
  (value: string) =>
    parseNumber(flag, value, min, max);
export const choiceOption =
  <T extends string>(flag: string, choices: readonly T[]) =>
  (value: string) =>
    parseChoice(flag, value, choices);

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * --device, --threads and (for commands that open artifacts, which may be sharded) --rank-devices:
 * the options every command that runs a model takes.
 */
export function deviceOptions(command: Command, opts: { rankDevices: boolean }): Command {
  command.option('--device <device>', `execution device: ${DEVICES.join(' | ')}`, choiceOption('--device', DEVICES), 'cpu');
  if (opts.rankDevices)
    command.option('--rank-devices <list>', rankDevices.help, (v: string) => rankDevices.parse!('--rank-devices', v, undefined));
  return command.option('--threads <n>', 'CPU threads (default: all cores)', intOption('--threads', 1));
}
