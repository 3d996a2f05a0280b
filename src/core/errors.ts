// Typed errors: the library throws these, and the CLI alone turns them into exit codes.

/** Base class of every error llmopt reports to a user; `exitCode` is what the CLI exits with. */
export class LlmoptError extends Error {
  readonly exitCode: number = 1;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad input: a missing, corrupt or inconsistent file, option or argument (exit 2). */
export class InputError extends LlmoptError {
  override readonly exitCode = 2;
}

/** A quality gate or check failed (exit 1): the run worked, the figures did not pass. */
export class GateError extends LlmoptError {
  override readonly exitCode = 1;
}

/** A device or execution provider that cannot be used on this machine (exit 2). */
export class DeviceError extends LlmoptError {
  override readonly exitCode = 2;
}
