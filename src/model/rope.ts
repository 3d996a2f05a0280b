// Rotary position embedding tables: inverse frequencies (with linear / llama3 / longrope scaling, as Hugging Face
// computes them in float32) and the cos/sin caches [rows, rotaryDim/2] the attention forms read.
import { rotaryDimOf, type DecoderSpec } from '../core/spec.js';

const f32 = Math.fround;

/** Inverse frequencies [rotaryDim/2], float32 like transformers' rope initialisation; `long`: longrope's long factors. */
export function inverseFrequencies(spec: DecoderSpec, long = false): Float32Array {
  const dim = rotaryDimOf(spec);
  const half = dim / 2;
  const inv = new Float32Array(half);
  const s = spec.ropeScaling;
  if (s?.type === 'longrope') {
    // 1 / (factor_i * base^(2i/dim)), the factors per frequency (Hugging Face's _compute_longrope_parameters).
    const factors = long ? s.longFactor : s.shortFactor;
    for (let i = 0; i < half; i++) inv[i] = f32(1 / f32(f32(factors[i]!) * f32(spec.ropeTheta ** f32((2 * i) / dim))));
    return inv;
  }
  for (let i = 0; i < half; i++) inv[i] = f32(1 / f32(spec.ropeTheta ** f32((2 * i) / dim)));
  if (!s) return inv;
  if (s.type === 'linear') return inv.map((x) => f32(x / s.factor));
  // llama3: long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  return inv.map((x) => {
    const wavelen = (2 * Math.PI) / x;
    if (wavelen < highWavelen) return x;
    if (wavelen > lowWavelen) return f32(x / s.factor);
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return f32((1 - smooth) * (x / s.factor) + smooth * x);
  });
}

/**
 * Rows of the cos/sin caches: one per position, and for longrope twice that — the short factors' table, then the
 * long factors' — since the graph picks a table by the sequence length (rows maxPositions on are the long table).
 */
export const rotaryCacheRows = (spec: DecoderSpec): number => (spec.ropeScaling?.type === 'longrope' ? 2 : 1) * spec.maxPositions;

/** cos and sin caches, row p holding cos(p * invFreq) — the layout GroupQueryAttention expects. */
export function rotaryCaches(spec: DecoderSpec): { cos: Float32Array; sin: Float32Array } {
  const s = spec.ropeScaling;
  const tables = s?.type === 'longrope' ? [inverseFrequencies(spec), inverseFrequencies(spec, true)] : [inverseFrequencies(spec)];
  // longrope scales cos and sin by its attention factor (Hugging Face's attention_scaling).
  const scale = s?.type === 'longrope' ? f32(s.attentionFactor) : 1;
  const half = tables[0]!.length;
  const rows = rotaryCacheRows(spec);
  const cos = new Float32Array(rows * half);
  const sin = new Float32Array(rows * half);
  tables.forEach((inv, t) => {
    for (let p = 0; p < spec.maxPositions; p++) {
      const row = (t * spec.maxPositions + p) * half;
      for (let i = 0; i < half; i++) {
        const angle = f32(p * inv[i]!);
        cos[row + i] = scale === 1 ? Math.cos(angle) : f32(Math.cos(angle)) * scale;
        sin[row + i] = scale === 1 ? Math.sin(angle) : f32(Math.sin(angle)) * scale;
      }
    }
  });
  return { cos, sin };
}
