// A GGUF encoder thread (parallel.ts): encodes the checked rows it is sent and sends their bytes back.
import { parentPort } from 'node:worker_threads';
import { encodeRows } from './index.js';
import type { EncodeJob, EncodeReply } from './parallel.js';

const port = parentPort!;
port.on('message', (job: EncodeJob) => {
  try {
    let bytes = encodeRows(job.type, job.data, job.rows, job.cols, job.options);
    if (bytes.byteOffset !== 0 || bytes.byteLength !== bytes.buffer.byteLength) bytes = bytes.slice();
    port.postMessage({ id: job.id, bytes } satisfies EncodeReply, [bytes.buffer as ArrayBuffer]);
  } catch (e) {
    port.postMessage({ id: job.id, error: e instanceof Error ? e.message : String(e) } satisfies EncodeReply);
  }
});
