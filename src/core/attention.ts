// The attention forms a decoder graph is built in; export, the artifact manifest, sharding and the
// runtime all name a graph by its form.

/** fused and inplace need onnxruntime (com.microsoft ops); inplace's cache I/O is llmopt's own (see model/attention.ts). */
export const ATTENTION_FORMS = ['fused', 'standard', 'inplace'] as const;
export type AttentionForm = (typeof ATTENTION_FORMS)[number];
