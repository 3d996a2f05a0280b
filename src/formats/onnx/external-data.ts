// Appends initializer bytes to an ONNX external data file (model.onnx.data) as the graph is built,
// so export holds one tensor at a time; offsets are aligned so runtimes can memory-map them.
import { openSync, writeSync, closeSync } from 'node:fs';

/** Offsets are multiples of this, as onnxruntime prefers for mmap-friendly loading. */
const ALIGNMENT = 64;

export class ExternalDataWriter {
  private fd: number;
  private position = 0;

  /** `path` is where bytes go; `location` is the name model.onnx records (relative to it). */
  constructor(
    path: string,
    readonly location: string,
  ) {
    this.fd = openSync(path, 'w');
  }

  append(bytes: Uint8Array): { offset: number; length: number } {
    const pad = (ALIGNMENT - (this.position % ALIGNMENT)) % ALIGNMENT;
    if (pad) {
      writeSync(this.fd, new Uint8Array(pad));
      this.position += pad;
    }
    const offset = this.position;
    let written = 0;
    while (written < bytes.byteLength) written += writeSync(this.fd, bytes, written, bytes.byteLength - written);
    this.position += bytes.byteLength;
    return { offset, length: bytes.byteLength };
  }

  get bytesWritten(): number {
    return this.position;
  }

  close(): void {
    closeSync(this.fd);
  }
}
