// A stage's gates against its figures: max_kl, max_ppl_ratio, min_top1 against the quality it measured,
// min_tokens_per_s against its bench. Checked on every run, from the recorded figures of a skipped stage too.
import type { Gate, GateKey } from './schema.js';
import type { StageFigures } from './stages.js';

export interface GateResult {
  gate: GateKey;
  limit: number;
  value: number;
  passed: boolean;
}

const FIGURE: Record<GateKey, { of: keyof StageFigures; max: boolean }> = {
  max_kl: { of: 'kl', max: true },
  max_ppl_ratio: { of: 'pplRatio', max: true },
  min_top1: { of: 'top1', max: false },
  min_tokens_per_s: { of: 'tokensPerSecond', max: false },
};

/** Every gate of a stage with its figure (the recipe checks up front that the stage produces each one). */
export function checkGates(gate: Gate | undefined, figures: StageFigures): GateResult[] {
  return (Object.entries(gate ?? {}) as Array<[GateKey, number | undefined]>)
    .filter((e): e is [GateKey, number] => e[1] !== undefined)
    .map(([key, limit]) => {
      const { of, max } = FIGURE[key];
      const value = figures[of] as number | null;
      // A figure the run did not produce (a distillation stopped before its eval) fails rather than passes.
      const passed = value !== null && Number.isFinite(value) && (max ? value <= limit : value >= limit);
      return { gate: key, limit, value: value ?? NaN, passed };
    });
}

/** "gate max_kl 0.05 (measured 0.0731)". */
export function describeGate(g: GateResult): string {
  return `gate ${g.gate} ${g.limit} (measured ${Number.isFinite(g.value) ? g.value.toPrecision(4) : 'nothing'})`;
}
