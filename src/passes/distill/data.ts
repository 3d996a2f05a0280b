// Training data for distillation: one document per line, tokenized, concatenated and packed into
// sequences of seqLen + 1 tokens (inputs and next-token labels), in a seeded shuffled order that a
// resumed run replays exactly.
import { InputError } from '../../core/errors.js';
import { readUtf8File, type TextTokenizer } from '../../formats/tokenizer.js';
import { seededRandom } from '../../runtime/sampling.js';
import type { TrainBatch } from './trainer.js';

export interface PackedData {
  path: string;
  /** Packed sequences of seqLen + 1 tokens each. */
  sequences: Int32Array[];
  tokens: number;
}

/** Tokenizes `path` (each document with <s>, ending with </s> when the tokenizer has one) and packs it. */
export function packText(path: string, tokenizer: TextTokenizer, seqLen: number, eos: number | null): PackedData {
  const docs = readUtf8File(path)
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '');
  if (docs.length === 0) throw new InputError(`${path}: no text (one document per line)`);
  const stream: number[] = [];
  for (const d of docs) {
    stream.push(...tokenizer.encode(d));
    if (eos !== null) stream.push(eos);
  }
  if (stream.length < 2) throw new InputError(`${path}: fewer than 2 tokens; nothing to predict`);
  const sequences: Int32Array[] = [];
  for (let start = 0; start + 1 < stream.length; start += seqLen) {
    const chunk = stream.slice(start, start + seqLen + 1);
    if (chunk.length >= 2) sequences.push(Int32Array.from(chunk));
  }
  return { path, sequences, tokens: stream.length };
}

/** Batches in a seeded order: epoch e shuffles with seed + e, so batch k of a run is always the same. */
export class BatchSchedule {
  private order: number[] = [];
  private epoch = -1;

  constructor(
    readonly data: PackedData,
    readonly batchSize: number,
    readonly seed: number,
  ) {}

  /** The k-th batch (0-based) of the run. */
  batch(k: number): TrainBatch {
    const perEpoch = Math.max(1, Math.floor(this.data.sequences.length / this.batchSize));
    const epoch = Math.floor(k / perEpoch);
    if (epoch !== this.epoch) this.shuffle(epoch);
    const rows = Array.from(
      { length: Math.min(this.batchSize, this.data.sequences.length) },
      (_, i) => this.data.sequences[this.order[((k % perEpoch) * this.batchSize + i) % this.order.length]!]!,
    );
    const S = Math.max(...rows.map((r) => r.length)) - 1;
    const B = rows.length;
    const ids = new BigInt64Array(B * S);
    const labels = new BigInt64Array(B * S);
    const mask = new Float32Array(B * S);
    rows.forEach((r, b) => {
      for (let s = 0; s < S; s++) {
        const valid = s + 1 < r.length;
        ids[b * S + s] = BigInt(r[Math.min(s, r.length - 1)]!);
        labels[b * S + s] = BigInt(valid ? r[s + 1]! : 0);
        mask[b * S + s] = valid ? 1 : 0;
      }
    });
    return { B, S, ids, labels, mask };
  }

  private shuffle(epoch: number): void {
    const random = seededRandom(this.seed + epoch * 7919);
    this.order = this.data.sequences.map((_, i) => i);
    for (let i = this.order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [this.order[i], this.order[j]] = [this.order[j]!, this.order[i]!];
    }
    this.epoch = epoch;
  }
}
