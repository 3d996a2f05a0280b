// quantize --format gguf --mix auto: llama.cpp's type for every tensor first, then the linear tensors raised to
// Q8_0 where the measured KL (sensitivity.ts, with the ggml types' own rounding) drops most per byte of the budget.
import { InputError } from '../../core/errors.js';
import { expectedTensors, type DecoderSpec } from '../../core/spec.js';
import { ggufArchitectureOf } from '../../formats/gguf/architectures.js';
import { GGML_TYPES, tensorBytes, type GgmlType } from '../../formats/gguf/ggml-types.js';
import { ggufTensorPlan } from '../../formats/gguf/layout.js';
import { ggmlBitsPerWeight } from '../../formats/gguf/mix.js';
import { dequantizeRows, quantizeRows } from '../../formats/gguf/quants/index.js';
import { openHfModel } from '../../model/checkpoint.js';
import { loadModelCalibration } from '../calibration.js';
import type { GgufTensorSlot } from '../export/gguf.js';
import { linearModules, type LinearModule } from '../targets.js';
import { SENSITIVITY_WINDOWS, spendBudget } from './mix-policy.js';
import { measureSensitivity, type Sensitivity } from './sensitivity.js';

/** The type --mix auto raises to: the widest block type llama.cpp's legacy and K-quant files share. */
const HIGH: GgmlType = 'Q8_0';

export interface GgufAutoPlan {
  /** GGUF tensor names raised to Q8_0. */
  raised: Set<string>;
  /** Bits per weight over the tensors auto may raise, as written. */
  bitsPerWeight: number;
  sensitivity: Record<string, Sensitivity>;
}

export interface GgufAutoOptions {
  targetBits: number;
  calib: string;
  calibSamples?: number;
  calibSeqLen?: number;
  onProgress?: (done: number, total: number, phase?: 'calibrate' | 'write') => void;
}

/**
 * Plans --mix auto over the GGUF tensors that hold one linear module each and that llama.cpp gives a block type
 * below Q8_0 (`typeOf`: the writer's own choice, with fallbacks; fused tensors and F16 fallbacks keep it).
 * The rounding measured is the type's own (quantizeRows then dequantizeRows, row by row, so the GGUF row
 * permutation does not change it). Throws InputError for a budget below what those tensors take at their types.
 */
export async function planGgufAuto(
  source: string,
  o: GgufAutoOptions,
  typeOf: (slot: GgufTensorSlot, spec: DecoderSpec, archName: string, log: boolean) => GgmlType,
): Promise<GgufAutoPlan> {
  const model = await openHfModel(source);
  try {
    const { spec } = model;
    const arch = ggufArchitectureOf(spec);
    const linear = new Map(linearModules(spec).map((t) => [`${t.module}.weight`, t]));
    const candidates: Array<{ slot: string; target: LinearModule; type: GgmlType }> = [];
    for (const e of ggufTensorPlan(spec, arch, expectedTensors(spec))) {
      const target = e.hf.length === 1 ? linear.get(e.hf[0]!) : undefined;
      if (!target || e.shape.length !== 2) continue;
      const layer = /^blk\.(\d+)\./.exec(e.gguf);
      const slot = { name: e.gguf, hf: e.hf, shape: e.shape, layer: layer ? Number(layer[1]) : null, entry: e };
      const type = typeOf(slot, spec, arch.gguf, false);
      const fits = target.cols % GGML_TYPES[HIGH].blockSize === 0;
      if (GGML_TYPES[type].blockSize > 1 && fits && ggmlBitsPerWeight(type) < ggmlBitsPerWeight(HIGH))
        candidates.push({ slot: e.gguf, target, type });
    }
    if (candidates.length === 0) throw new InputError(`--mix auto: no linear tensor below ${HIGH} to raise in this model`);
    const bytesAt = (c: (typeof candidates)[number], type: GgmlType) => tensorBytes(type, c.target.rows * c.target.cols);
    const weights = candidates.reduce((a, c) => a + c.target.rows * c.target.cols, 0);
    const floor = candidates.reduce((a, c) => a + bytesAt(c, c.type), 0);
    const budget = Math.floor((o.targetBits * weights) / 8);
    if (budget < floor) {
      const least = ((floor * 8) / weights).toFixed(4);
      throw new InputError(`--target-bits ${o.targetBits}: below what llama.cpp's types take here (${least} bits per weight)`);
    }
    const typeOfModule = new Map(candidates.map((c) => [c.target.module, c.type]));
    const set = loadModelCalibration(o.calib, source, spec, o.calibSamples, o.calibSeqLen);
    const measured = await measureSensitivity(
      spec,
      model.weights,
      set,
      candidates.map((c) => c.target),
      {
        windows: SENSITIVITY_WINDOWS,
        fakeQuantize: (t, w, level) => {
          const type = level === 'low' ? typeOfModule.get(t.module)! : HIGH;
          return dequantizeRows(type, quantizeRows(type, w, t.rows, t.cols), t.rows, t.cols);
        },
        onProgress: (done, total) => o.onProgress?.(done, total, 'calibrate'),
      },
    );
    const raisedModules = spendBudget(
      candidates.map((c) => ({
        module: c.target.module,
        extraBytes: bytesAt(c, HIGH) - bytesAt(c, c.type),
        gain: measured.get(c.target.module)!.low - measured.get(c.target.module)!.high,
      })),
      budget - floor,
    );
    const raised = new Set(candidates.filter((c) => raisedModules.has(c.target.module)).map((c) => c.slot));
    const bytes = candidates.reduce((a, c) => a + bytesAt(c, raised.has(c.slot) ? HIGH : c.type), 0);
    return { raised, bitsPerWeight: (bytes * 8) / weights, sensitivity: Object.fromEntries(measured) };
  } finally {
    await model.close();
  }
}
