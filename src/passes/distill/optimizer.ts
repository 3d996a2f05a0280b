// AdamW over Float32Array weights with linear warmup and cosine decay, global-norm gradient
// clipping, no weight decay on norms and biases, and optional masks that keep pruned weights at
// exactly zero (the gradient and the update are both masked).

export interface AdamWOptions {
  lr: number;
  steps: number;
  warmupSteps: number;
  /** Final learning rate as a fraction of lr at the end of the cosine. */
  minLrRatio: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this (0: no clipping). */
  clipNorm: number;
}

export const ADAMW_DEFAULTS: Omit<AdamWOptions, 'lr' | 'steps'> = {
  warmupSteps: 0,
  minLrRatio: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  weightDecay: 0.01,
  clipNorm: 1,
};

/** Norm scales and biases take no weight decay. */
export function decays(name: string): boolean {
  return !(name.includes('norm') || name.endsWith('.bias'));
}

export interface OptimizerState {
  step: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export class AdamW {
  readonly state: OptimizerState;

  constructor(
    readonly opts: AdamWOptions,
    readonly weights: Map<string, Float32Array>,
    /** 1 = trainable weight, 0 = held at zero (pruned). */
    readonly masks: Map<string, Uint8Array> = new Map(),
    state?: OptimizerState,
  ) {
    this.state = state ?? {
      step: 0,
      m: new Map([...weights].map(([n, w]) => [n, new Float32Array(w.length)])),
      v: new Map([...weights].map(([n, w]) => [n, new Float32Array(w.length)])),
    };
  }

  /** Learning rate at a step (1-based): linear warmup, then cosine decay to minLrRatio * lr. */
  learningRate(step: number): number {
    const { lr, warmupSteps, steps, minLrRatio } = this.opts;
    if (warmupSteps > 0 && step <= warmupSteps) return (lr * step) / warmupSteps;
    const progress = Math.min(1, (step - warmupSteps) / Math.max(1, steps - warmupSteps));
    return lr * (minLrRatio + (1 - minLrRatio) * 0.5 * (1 + Math.cos(Math.PI * progress)));
  }

  /** Applies one update; returns the gradient norm before clipping. */
  update(grads: Map<string, Float32Array>): { gradNorm: number; lr: number } {
    const { beta1, beta2, eps, weightDecay, clipNorm } = this.opts;
    for (const [name, g] of grads) {
      const mask = this.masks.get(name);
      if (mask) for (let i = 0; i < g.length; i++) if (!mask[i]) g[i] = 0;
    }
    let sq = 0;
    for (const g of grads.values()) for (let i = 0; i < g.length; i++) sq += g[i]! * g[i]!;
    const gradNorm = Math.sqrt(sq);
    const scale = clipNorm > 0 && gradNorm > clipNorm ? clipNorm / gradNorm : 1;
    const step = ++this.state.step;
    const lr = this.learningRate(step);
    const c1 = 1 - beta1 ** step;
    const c2 = 1 - beta2 ** step;
    for (const [name, w] of this.weights) {
      const g = grads.get(name)!;
      const m = this.state.m.get(name)!;
      const v = this.state.v.get(name)!;
      const wd = decays(name) ? weightDecay : 0;
      const mask = this.masks.get(name);
      for (let i = 0; i < w.length; i++) {
        const gi = g[i]! * scale;
        m[i] = beta1 * m[i]! + (1 - beta1) * gi;
        v[i] = beta2 * v[i]! + (1 - beta2) * gi * gi;
        w[i] = w[i]! - lr * (m[i]! / c1 / (Math.sqrt(v[i]! / c2) + eps) + wd * w[i]!);
      }
      if (mask) for (let i = 0; i < w.length; i++) if (!mask[i]) w[i] = 0;
    }
    return { gradNorm, lr };
  }
}
