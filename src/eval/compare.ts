// Quality of a pass's output against its source, as every pass reports it with --eval: both models
// opened (Hugging Face folders exported to float32 on the fly), evaluated in lockstep on the same text.
import { loadChunkedWindows } from './chunks.js';
import { loadEvalWindows } from './dataset.js';
import { evaluate, type EvalReport } from './evaluate.js';
import { openReference } from './reference.js';
import { loadTokenizer } from '../formats/tokenizer.js';
import type { Device } from '../runtime/device.js';

export interface CompareOptions {
  device?: Device;
  batchSize?: number;
  limit?: number;
  /** llama-perplexity's chunks of this many tokens instead of one window per document (eval/chunks.ts). */
  chunks?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Perplexity of `candidate` and its KL / top-1 against `reference` on `data` (one document per line). */
export async function compareModels(candidate: string, reference: string, data: string, opts: CompareOptions = {}): Promise<EvalReport> {
  const device = opts.device ?? 'cpu';
  const cand = await openReference(candidate, { device });
  try {
    const ref = await openReference(reference, { device });
    try {
      const tokenizer = loadTokenizer(candidate);
      const { spec } = cand.model;
      const windows =
        opts.chunks !== undefined
          ? loadChunkedWindows(data, tokenizer, opts.chunks, spec.maxPositions, spec.bosTokenId)
          : loadEvalWindows(data, tokenizer, spec.maxPositions, opts.limit);
      return await evaluate(cand.model, windows, ref.model, { batchSize: opts.batchSize ?? 8, onProgress: opts.onProgress });
    } finally {
      await ref.close();
    }
  } finally {
    await cand.close();
  }
}
