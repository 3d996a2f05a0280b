// Option parsers shared by commands: each rejects a bad value with an InputError naming the option.
import { InputError } from '../errors.js';

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
