// The pass registry: one definition per pass, from which the CLI commands, the recipe stage schemas and
// the recipe's cross-stage checks derive; everything that treats passes alike looks them up here.
import type { PassDefinition } from './pass.js';
import { exportPass } from './export/definition.js';
import { quantizePass } from './quantize/definition.js';
import { prunePass } from './prune/definition.js';
import { distillPass } from './distill/definition.js';
import { shardPass } from './shard/definition.js';
import { evalPass } from './eval/definition.js';
import { benchPass } from './bench/definition.js';

/** The passes, in the order a recipe error lists them. */
export const PASSES = {
  prune: prunePass,
  distill: distillPass,
  quantize: quantizePass,
  export: exportPass,
  shard: shardPass,
  eval: evalPass,
  bench: benchPass,
};
export type PassName = keyof typeof PASSES;
export const PASS_NAMES = Object.keys(PASSES) as PassName[];

/** A pass's definition with its types erased, for code that treats every pass alike. */
export function passDefinition(name: PassName): PassDefinition {
  return PASSES[name] as unknown as PassDefinition;
}
