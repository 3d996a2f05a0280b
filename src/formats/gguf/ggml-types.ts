// ggml's tensor element types as GGUF stores them: the numeric id in a tensor info, and each type's
// block (elements per block, bytes per block), from which a tensor's byte size follows.

/** The ggml types llmopt reads and writes (ids as in ggml.h's `enum ggml_type`). */
export const GGML_TYPES = {
  F32: { id: 0, blockSize: 1, blockBytes: 4 },
  F16: { id: 1, blockSize: 1, blockBytes: 2 },
  Q4_0: { id: 2, blockSize: 32, blockBytes: 18 },
  Q4_1: { id: 3, blockSize: 32, blockBytes: 20 },
  Q5_0: { id: 6, blockSize: 32, blockBytes: 22 },
  Q5_1: { id: 7, blockSize: 32, blockBytes: 24 },
  Q8_0: { id: 8, blockSize: 32, blockBytes: 34 },
  Q4_K: { id: 12, blockSize: 256, blockBytes: 144 },
  Q5_K: { id: 13, blockSize: 256, blockBytes: 176 },
  Q6_K: { id: 14, blockSize: 256, blockBytes: 210 },
  BF16: { id: 30, blockSize: 1, blockBytes: 2 },
} as const;

export type GgmlType = keyof typeof GGML_TYPES;

/**
 * Names of ggml type ids llmopt does not handle, so a refusal can say what a file holds
 * (ids 4 and 5 were Q4_2/Q4_3, removed from ggml long ago).
 */
const OTHER_TYPE_NAMES: Record<number, string> = {
  9: 'Q8_1',
  10: 'Q2_K',
  11: 'Q3_K',
  15: 'Q8_K',
  16: 'IQ2_XXS',
  17: 'IQ2_XS',
  18: 'IQ3_XXS',
  19: 'IQ1_S',
  20: 'IQ4_NL',
  21: 'IQ3_S',
  22: 'IQ2_S',
  23: 'IQ4_XS',
  24: 'I8',
  25: 'I16',
  26: 'I32',
  27: 'I64',
  28: 'F64',
  29: 'IQ1_M',
  34: 'TQ1_0',
  35: 'TQ2_0',
  39: 'MXFP4',
};

const BY_ID = new Map<number, GgmlType>(Object.entries(GGML_TYPES).map(([name, t]) => [t.id, name as GgmlType]));

/** The type of a ggml type id, or undefined when llmopt does not handle it. */
export function ggmlTypeOf(id: number): GgmlType | undefined {
  return BY_ID.get(id);
}

/** A readable name for any ggml type id (for messages about types llmopt does not handle). */
export function ggmlTypeName(id: number): string {
  return BY_ID.get(id) ?? OTHER_TYPE_NAMES[id] ?? `unknown type ${id}`;
}

/** Whether a row of `cols` elements can be stored in `type` (whole blocks only: ggml has no ragged blocks). */
export function rowFits(type: GgmlType, cols: number): boolean {
  return cols % GGML_TYPES[type].blockSize === 0;
}

/** Bytes of a tensor of `elements` values in `type` (elements a multiple of the block size). */
export function tensorBytes(type: GgmlType, elements: number): number {
  const t = GGML_TYPES[type];
  return (elements / t.blockSize) * t.blockBytes;
}
