// Fused checkpoint tensors (Phi-3's qkv_proj = [q; k; v] rows, gate_up_proj = [gate; up]): the per-projection view
// every consumer reads, and its inverse, the checkpoint layout writers use to store the parts fused again.
import { expectedTensors, layerTensorNames, projectionShape, type DecoderSpec } from './spec.js';
import type { WeightSource } from './weights.js';

/** One stored tensor and the projection tensors whose rows it stacks, in order. */
export interface FusedEntry {
  name: string;
  shape: number[];
  parts: Array<{ name: string; rows: number }>;
}

/** The fused tensors of a spec (weights, and biases where every part has one), by stored name. */
export function fusedLayout(spec: DecoderSpec): Map<string, FusedEntry> {
  const out = new Map<string, FusedEntry>();
  for (let i = 0; i < spec.numLayers; i++) {
    const n = layerTensorNames(i);
    for (const f of spec.fusedTensors ?? []) {
      const cols = projectionShape(spec, f.parts[0]!)[1];
      const suffixes = f.parts.every((p) => spec.biases[p]) ? ['weight', 'bias'] : ['weight'];
      for (const suffix of suffixes) {
        const parts = f.parts.map((p) => ({ name: `${n[p]}.${suffix}`, rows: projectionShape(spec, p)[0] }));
        const rows = parts.reduce((a, p) => a + p.rows, 0);
        const name = `model.layers.${i}.${f.module}.${suffix}`;
        out.set(name, { name, shape: suffix === 'weight' ? [rows, cols] : [rows], parts });
      }
    }
  }
  return out;
}

/** Stored tensor name of each fused part (`...q_proj.weight` -> `...qkv_proj.weight`). */
export function fusedNameOfPart(spec: DecoderSpec): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of fusedLayout(spec).values()) for (const p of e.parts) out.set(p.name, e.name);
  return out;
}

/** The tensors a checkpoint of this spec stores, in its own layout: expectedTensors with fused parts stored as one. */
export function checkpointTensors(spec: DecoderSpec): Map<string, number[]> {
  const layout = fusedLayout(spec);
  if (layout.size === 0) return expectedTensors(spec);
  const partOf = fusedNameOfPart(spec);
  const out = new Map<string, number[]>();
  for (const [name, shape] of expectedTensors(spec)) {
    const fused = partOf.get(name);
    if (fused === undefined) out.set(name, shape);
    else if (!out.has(fused)) out.set(fused, layout.get(fused)!.shape);
  }
  return out;
}

/** Stacks the parts' rows into the fused tensor. */
export function concatRows(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A stored fused tensor from its parts, each read (possibly compressed) through `read`. */
export async function fuseParts(entry: FusedEntry, read: (partName: string) => Promise<Float32Array>): Promise<Float32Array> {
  const parts: Float32Array[] = [];
  for (const p of entry.parts) parts.push(await read(p.name));
  return concatRows(parts);
}

/**
 * A source over the checkpoint's own names that serves each fused part as its rows of the stored tensor, so graph
 * builders and passes read q_proj, k_proj, ... whatever the layout. The last fused tensor read is kept: q, k and v
 * come one after the other, and the tensor is read once for the three.
 */
export function splitFusedWeights(spec: DecoderSpec, source: WeightSource): WeightSource {
  const layout = fusedLayout(spec);
  if (layout.size === 0) return source;
  const where = new Map<string, { entry: FusedEntry; offset: number; rows: number }>();
  for (const entry of layout.values()) {
    let offset = 0;
    for (const p of entry.parts) {
      where.set(p.name, { entry, offset, rows: p.rows });
      offset += p.rows;
    }
  }
  let last: { name: string; data: Float32Array } | null = null;
  return {
    has: (name) => (where.has(name) ? source.has(where.get(name)!.entry.name) : source.has(name)),
    shape: (name) => {
      const w = where.get(name);
      return w ? [w.rows, ...w.entry.shape.slice(1)] : source.shape(name);
    },
    readFloat32: async (name) => {
      const w = where.get(name);
      if (!w) return source.readFloat32(name);
      if (last?.name !== w.entry.name) last = { name: w.entry.name, data: await source.readFloat32(w.entry.name) };
      const cols = w.entry.shape[1] ?? 1;
      return last.data.slice(w.offset * cols, (w.offset + w.rows) * cols);
    },
  };
}
