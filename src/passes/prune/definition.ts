// prune's declaration: N:M or unstructured sparsity of a float Hugging Face folder by magnitude, Wanda or
// SparseGPT, written as a Hugging Face folder; with eval, the quality cost against the dense model.
import { z } from 'zod';
import { choice, custom, int, negatable, number, OptionError, outputFolder, printOptions, repeatable, textFile } from '../options.js';
import { definePass, evalAfter, QUALITY_GATES, quality } from '../pass.js';
import { parseSparsity, prune, PRUNE_METHODS } from './prune.js';

export const PRUNE_OPTIONS = {
  ...outputFolder('Hugging Face folder to write (same tensor names and dtypes, exact zeros)'),
  sparsity: custom({
    arg: '<s>',
    required: true,
    help: 'N:M such as 2:4 (N kept of every M consecutive inputs) or a fraction such as 0.5',
    schema: z.union([z.string(), z.number()]),
    parse: (_flag, v): string | number => v,
  }),
  method: choice(PRUNE_METHODS, {
    arg: '<method>',
    default: 'magnitude',
    help: `${PRUNE_METHODS.join(' | ')} (wanda and sparsegpt need --calib)`,
  }),
  scope: choice(['row', 'layer'], {
    arg: '<scope>',
    default: 'row',
    help: 'unstructured ranking: per output row or over the whole tensor (layer)',
  }),
  calib: textFile({ help: 'calibration text, one document per line' }),
  calibSamples: int({ min: 1, default: 128, help: 'calibration windows' }),
  calibSeqLen: int({ min: 2, help: 'tokens per calibration window (default: min(128, context))' }),
  exclude: repeatable({ arg: '<glob>', help: 'keep matching modules dense, e.g. "model.layers.0.*" (repeatable)' }),
  dampening: number({ arg: '<f>', min: 0, default: 0.01, help: 'SparseGPT Hessian dampening, a fraction of the mean diagonal' }),
  sequential: negatable({ help: "calibrate every layer on the dense model's activations instead of the pruned layers' outputs" }),
  eval: textFile({ help: 'after pruning, measure KL / top-1 / perplexity against the dense model on this text' }),
  ...printOptions('no progress bar'),
};

export const prunePass = definePass({
  name: 'prune',
  options: PRUNE_OPTIONS,
  reads: { input: ['hf'] },
  readHint: 'prune the float model first, then quantize or export',
  writes: () => ({ kind: 'hf' }),
  figures: (o) => (o.eval !== undefined ? QUALITY_GATES : []),
  gateHint: '; set eval: true on the stage to measure it, or gate an eval stage',
  dataDefaults: (o) => (o.method !== 'magnitude' ? ['calib'] : []),
  validate: (o) => {
    const structure = parseSparsity(String(o.sparsity), o.scope);
    // SparseGPT compensates each row's error as it prunes it, so every row ends at the same sparsity.
    if (o.method === 'sparsegpt' && structure.kind === 'unstructured' && structure.scope === 'layer') {
      throw new OptionError(
        'scope',
        (n) => `${n('scope')} layer works with ${n('method')} magnitude or wanda; sparsegpt prunes each output row to the same sparsity`,
      );
    }
    if (o.method !== 'magnitude' && !o.calib)
      throw new OptionError('calib', (n) => `${n('method')} ${o.method} needs calibration text: give ${n('calib')} <file>`);
    // Magnitude pruning scores weights alone: calibration text it would not read is refused, not silently ignored.
    if (o.method === 'magnitude' && o.calib !== undefined)
      throw new OptionError(
        'calib',
        (n) => `${n('calib')}: ${n('method')} magnitude reads no calibration text (${n('method')} wanda and sparsegpt do)`,
      );
  },
  run: async (o, ctx) => {
    const report = await prune(ctx.reads.input!, ctx.output, {
      ...o,
      structure: parseSparsity(String(o.sparsity), o.scope),
      onProgress: ctx.onProgress,
    });
    return { ...report, eval: await evalAfter(o.eval, ctx) };
  },
  measured: (r) => quality(r.eval),
});
