// quantizeRows on worker threads: a matrix's rows cut into chunks that the threads take in turn, for the
// K-quants' scale searches (the slowest step of a GGUF write). Rows are encoded independently, so the bytes
// equal quantizeRows' whatever the thread count.
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startModuleWorker } from '../../../core/worker.js';
import { GGML_TYPES, tensorBytes, type GgmlType } from '../ggml-types.js';
import { checkRows, encodeRows, type QuantizeRowsOptions } from './index.js';

/** Below this many values a matrix is encoded on the calling thread: a worker's round trip would cost more. */
const PARALLEL_MIN_VALUES = 1 << 18;
/** Values per chunk (16 MiB of float32): bounds the copies in flight, two per thread, whatever the tensor's size. */
const CHUNK_VALUES = 1 << 22;

export interface EncodeJob {
  id: number;
  type: GgmlType;
  data: Float32Array;
  rows: number;
  cols: number;
  options: QuantizeRowsOptions;
}

export type EncodeReply = { id: number; bytes: Uint8Array } | { id: number; error: string };

/** One encoder thread and its requests in flight; it holds the process open only while it has some. */
class EncoderThread {
  private next = 1;
  private readonly pending = new Map<number, { resolve: (b: Uint8Array) => void; reject: (e: Error) => void }>();
  private readonly worker: Worker = startModuleWorker(import.meta.url, 'encode-worker');
  failed = false;

  constructor() {
    this.worker.unref();
    this.worker.on('message', (r: EncodeReply) => {
      const p = this.pending.get(r.id);
      this.pending.delete(r.id);
      if (this.pending.size === 0) this.worker.unref();
      if ('error' in r) p?.reject(new Error(`GGUF encoder thread: ${r.error}`));
      else p?.resolve(r.bytes);
    });
    const fail = (e: Error) => {
      this.failed = true;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`GGUF encoder thread exited (code ${code})`)));
  }

  encode(job: Omit<EncodeJob, 'id'>): Promise<Uint8Array> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, ...job } satisfies EncodeJob, [job.data.buffer as ArrayBuffer]);
    });
  }
}

const pool: EncoderThread[] = [];

function encoderThreads(n: number): EncoderThread[] {
  for (let i = pool.length - 1; i >= 0; i--) if (pool[i]!.failed) pool.splice(i, 1);
  while (pool.length < n) pool.push(new EncoderThread());
  return pool.slice(0, n);
}

/**
 * quantizeRows on `threads` worker threads (default: all cores), with the same checks and the same bytes. A matrix
 * under 256K values, the float types and `threads` 1 are encoded on the calling thread.
 */
export async function quantizeRowsParallel(
  type: GgmlType,
  data: Float32Array,
  rows: number,
  cols: number,
  options: QuantizeRowsOptions = {},
  threads = availableParallelism(),
): Promise<Uint8Array> {
  checkRows(type, data, rows, cols, options);
  if (threads <= 1 || GGML_TYPES[type].blockSize === 1 || data.length < PARALLEL_MIN_VALUES)
    return encodeRows(type, data, rows, cols, options);
  const rowsPerChunk = Math.max(1, Math.min(Math.floor(CHUNK_VALUES / cols), Math.ceil(rows / threads)));
  const rowBytes = tensorBytes(type, cols);
  const out = new Uint8Array(rows * rowBytes);
  let nextRow = 0;
  let failed = false;
  const work = async (thread: EncoderThread) => {
    while (nextRow < rows && !failed) {
      const first = nextRow;
      const n = Math.min(rowsPerChunk, rows - first);
      nextRow += n;
      const bytes = await thread
        .encode({ type, data: data.slice(first * cols, (first + n) * cols), rows: n, cols, options })
        .catch((e: Error) => {
          // The other threads stop taking chunks: the call has failed.
          failed = true;
          throw e;
        });
      if (bytes.length !== n * rowBytes) throw new Error(`GGUF encoder thread: ${bytes.length} bytes for ${n} rows of ${type}`);
      out.set(bytes, first * rowBytes);
    }
  };
  await Promise.all(encoderThreads(Math.min(threads, Math.ceil(rows / rowsPerChunk))).map(work));
  return out;
}
