// Rotary position embedding tables: inverse frequencies (with linear / llama3 scaling, as Hugging Face
// computes them in float32) and the cos/sin caches [maxPositions, headDim/2] both attention forms read.
import type { DecoderSpec } from '../core/spec.js';

const f32 = Math.fround;

/** Inverse frequencies [headDim/2], float32 like transformers' rope initialisation. */
export function inverseFrequencies(spec: DecoderSpec): Float32Array {
  const half = spec.headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f32(1 / f32(spec.ropeTheta ** f32((2 * i) / spec.headDim)));
  const s = spec.ropeScaling;
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

/** cos and sin caches, row p holding cos(p * invFreq) — the layout GroupQueryAttention expects. */
export function rotaryCaches(spec: DecoderSpec): { cos: Float32Array; sin: Float32Array } {
  const inv = inverseFrequencies(spec);
  const half = inv.length;
  const cos = new Float32Array(spec.maxPositions * half);
  const sin = new Float32Array(spec.maxPositions * half);
  for (let p = 0; p < spec.maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = f32(p * inv[i]!);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
