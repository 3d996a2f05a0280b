// Option parsers shared by commands: each rejects a bad value with an InputError naming the option.
import type { Command } from 'commander';
import { InputError } from '../core/errors.js';
import { DEVICES, type Device } from '../runtime/device.js';

export function intOption(flag: string, min = 0): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InputError(`${flag} ${value}: expected an integer >= ${min}`);
    return n;
  };
}

export function numberOption(flag: string, min = -Infinity, max = Infinity): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw new InputError(`${flag} ${value}: expected a number${min > -Infinity ? ` >= ${min}` : ''}${max < Infinity ? ` <= ${max}` : ''}`);
    }
    return n;
  };
}

export function choiceOption<T extends string>(flag: string, choices: readonly T[]): (value: string) => T {
  return (value) => {
    if ((choices as readonly string[]).includes(value)) return value as T;
    throw new InputError(`${flag} ${value}: choose one of ${choices.join(', ')}`);
  };
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** A comma-separated device per rank: `cpu,cpu` or `cuda,cuda,cpu,cpu`. */
export function rankDevicesOption(value: string): Device[] {
  const parse = choiceOption('--rank-devices', DEVICES);
  return value.split(',').map((d) => parse(d.trim()));
}

/**
 * --device, --threads and (for commands that open artifacts, which may be sharded) --rank-devices:
 * the options every command that runs a model takes.
 */
export function deviceOptions(command: Command, opts: { rankDevices: boolean }): Command {
  command.option('--device <device>', `execution device: ${DEVICES.join(' | ')}`, choiceOption('--device', DEVICES), 'cpu');
  if (opts.rankDevices) command.option('--rank-devices <list>', 'sharded models: a device per rank, e.g. cuda,cuda,cpu,cpu', rankDevicesOption);
  return command.option('--threads <n>', 'CPU threads (default: all cores)', intOption('--threads', 1));
}
