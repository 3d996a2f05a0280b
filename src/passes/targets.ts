// Which linear layers a pass touches: the q/k/v/o/gate/up/down projections of every decoder layer,
// minus the modules matched by --exclude globs (embeddings and lm_head are never linear targets).
import { InputError } from '../core/errors.js';
import type { CaptureName } from '../core/io.js';
import { CAPTURE_OF } from '../model/decoder.js';
import { layerTensorNames, PROJECTIONS, type DecoderSpec, type Projection } from '../core/spec.js';

/** The projections a pass targets: every linear layer of a decoder layer (core/spec.ts names them). */
export const LINEAR_KINDS = PROJECTIONS;
export type LinearKind = Projection;

export interface LinearModule {
  layer: number;
  kind: LinearKind;
  /** Hugging Face module name, e.g. model.layers.3.mlp.down_proj (weight: `${module}.weight`). */
  module: string;
  /** out_features, in_features */
  rows: number;
  cols: number;
  /** The captured input that feeds it during calibration. */
  capture: CaptureName;
}

/** Every linear module of the decoder, layer by layer, in graph order. */
export function linearModules(spec: DecoderSpec): LinearModule[] {
  const { hiddenSize: h, numHeads, kvHeads, headDim: d, intermediateSize: f } = spec;
  const dims: Record<LinearKind, [number, number]> = {
    q: [numHeads * d, h],
    k: [kvHeads * d, h],
    v: [kvHeads * d, h],
    o: [h, numHeads * d],
    gate: [f, h],
    up: [f, h],
    down: [h, f],
  };
  const out: LinearModule[] = [];
  for (let layer = 0; layer < spec.numLayers; layer++) {
    const names = layerTensorNames(layer);
    for (const kind of LINEAR_KINDS)
      out.push({ layer, kind, module: names[kind], rows: dims[kind][0], cols: dims[kind][1], capture: CAPTURE_OF[kind] });
  }
  return out;
}

/** Shell-style globs (`*`, `?`) over module names; `model.layers.0.*` or `*down_proj`. */
export function globMatcher(patterns: readonly string[]): (name: string) => boolean {
  const regexes = patterns.map((p) => {
    if (p.trim() === '') throw new InputError('--exclude: empty pattern');
    const body = p
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.');
    return new RegExp(`^${body}$`);
  });
  return (name) => regexes.some((r) => r.test(name) || r.test(`${name}.weight`));
}

/** The targeted modules: all linear modules except excluded ones. */
export function selectTargets(spec: DecoderSpec, exclude: readonly string[]): LinearModule[] {
  const excluded = globMatcher(exclude);
  return linearModules(spec).filter((m) => !excluded(m.module));
}
