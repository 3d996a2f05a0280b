// The WebGPU check matrix: which artifacts (model x attention form x precision) are built on the CPU and
// what each is checked for on WebGPU, and the assertions that judge a checks.ts result.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { AttentionForm } from '../../src/core/io.js';
import { AIDREAMS, DREAMS_EVAL, GQA, MHA, runCli, sharedModel, tempDir } from '../support.js';
import type { CheckResult, CheckSpec } from './checks.js';
import { KL_TOLERANCE, LOGITS_TOLERANCE } from './support.js';

export type Precision = 'fp32' | 'int8' | 'int4' | 'w8a8' | 'fp16';

export interface MatrixCase {
  name: string;
  source: string;
  form: AttentionForm;
  precision: Precision;
  /** The checks, without the folders (filled in when built). */
  checks: Checks;
}

/** CheckSpec without folders: `draft` speculates with the int4 artifact of the same form; `evalLines` evals on dreams-eval. */
export type Checks = Omit<CheckSpec, 'dir' | 'draft' | 'eval'> & { draft?: true; evalLines?: number };

const built = new Map<string, string>();
/** The artifact of `source` in `form` and `precision`, exported or quantized by the CLI (on the CPU), once per process. */
export function artifact(source: string, form: AttentionForm, precision: Precision): string {
  const key = `${source}|${form}|${precision}`;
  const have = built.get(key);
  if (have) return have;
  const out = join(tempDir('llmopt-webgpu-'), `${form}-${precision}`);
  const args =
    precision === 'fp32'
      ? ['export', source, '-o', out, '--attention', form, '-q']
      : // Made for WebGPU: its MatMulNBits settings (accuracy_level 0, float embedding), not the CPU's defaults.
        ['quantize', source, '--to', precision, '-o', out, '--attention', form, '--device', 'webgpu', '-q'];
  const r = runCli(args);
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  built.set(key, out);
  return out;
}

/** The checks of one case with its artifact folder (and its draft and eval reference built too). */
export function specOf(c: MatrixCase): CheckSpec {
  const { draft, evalLines, ...checks } = c.checks;
  const spec: CheckSpec = { dir: artifact(c.source, c.form, c.precision), ...checks };
  if (draft) spec.draft = artifact(c.source, c.form, 'int4');
  if (evalLines) spec.eval = { data: DREAMS_EVAL, reference: artifact(c.source, 'standard', 'fp32'), limit: evalLines };
  return spec;
}

/** Asserts every figure of a result against the tolerances (LOGITS_TOLERANCE, KL_TOLERANCE) and the CPU's ids. */
export function judge(c: MatrixCase, r: CheckResult): void {
  const where = `${c.name} (${r.description})`;
  for (const [L, d] of Object.entries(r.lengths))
    assert.ok(d <= LOGITS_TOLERANCE, `${where}: logits at a ${L}-token prompt differ by ${d}`);
  if (c.checks.decode) assert.ok(r.decode! <= LOGITS_TOLERANCE, `${where}: cached decoding differs from the full pass by ${r.decode}`);
  if (c.checks.batch) assert.ok(r.batch! <= LOGITS_TOLERANCE, `${where}: a padded batch differs from each row alone by ${r.batch}`);
  if (c.checks.greedy) assert.deepEqual(r.greedy!.webgpu, r.greedy!.cpu, `${where}: greedy ids differ from the CPU's`);
  if (c.checks.serve) {
    assert.deepEqual(r.serve!.webgpu, r.serve!.cpu, `${where}: served completions differ from the CPU's`);
    assert.equal(r.serve!.policy, c.form === 'standard' ? 'static' : 'continuous', `${where}: serving policy`);
  }
  if (c.checks.draft)
    assert.deepEqual(r.draft!.webgpu, r.draft!.cpu, `${where}: speculative greedy ids differ from plain greedy on the CPU`);
  if (c.checks.evalLines) {
    const { cpu, webgpu } = r.eval!;
    assert.ok(Math.abs(webgpu - cpu) <= KL_TOLERANCE, `${where}: eval KL ${webgpu} on WebGPU, ${cpu} on the CPU`);
  }
}

/** Full-pass prompt lengths around the 32-token boundary of the known GroupQueryAttention fault, and the whole context. */
const lengthsFor = (context: number) => [1, 31, 32, 100, context];

const FULL_CHECKS = (context: number): Checks => ({
  lengths: lengthsFor(context),
  decode: { prefill: 29, total: 36 },
  batch: [12, 35],
  greedy: 8,
});

const FORMS: AttentionForm[] = ['fused', 'standard', 'inplace'];
const PRECISIONS: Precision[] = ['fp32', 'int8', 'int4', 'w8a8', 'fp16'];
const TINY = ['qwen2-tiny', 'qwen3-tiny', 'gemma3-tiny', 'phi3-tiny', 'smollm3-tiny'];

/** Every case: aidreams-260k in every form and precision, the tiny checkpoints and the fixtures in every form at fp32. */
export function fullMatrix(): MatrixCase[] {
  const cases: MatrixCase[] = [];
  for (const form of FORMS)
    for (const precision of PRECISIONS) {
      // w8a8 quantizes activations per tensor at run time (DynamicQuantizeMatMul, which the WebGPU provider
      // lacks, so onnxruntime runs it on the CPU): a code flipped by a last-bit difference moves logits, and a
      // padded batch or a decode step quantizes other tensors than the full pass, on any device. Checked: eval
      // KL and greedy ids.
      const checks: Checks =
        precision === 'w8a8'
          ? { lengths: [], greedy: 8, evalLines: 4 }
          : { ...FULL_CHECKS(128), evalLines: 4, ...(precision === 'fp32' ? { serve: 3, draft: true as const } : {}) };
      cases.push({ name: `aidreams-260k ${form} ${precision}`, source: AIDREAMS, form, precision, checks });
    }
  for (const name of TINY)
    for (const form of FORMS)
      cases.push({ name: `${name} ${form} fp32`, source: sharedModel(name), form, precision: 'fp32', checks: FULL_CHECKS(256) });
  for (const [name, source] of [
    ['tiny-llama-mha', MHA],
    ['tiny-llama-gqa', GQA],
  ] as const)
    for (const form of FORMS) cases.push({ name: `${name} ${form} fp32`, source, form, precision: 'fp32', checks: FULL_CHECKS(128) });
  return cases;
}

/**
 * The subset `npm test` runs (SwiftShader compiles every new shader shape on the CPU, seconds each): fused
 * fp16 aidreams-260k, whose two routed paths (GroupQueryAttention kept on the CPU past the 32-token
 * boundary, float16 weights without shader-f16) are where an adapter's faults would show.
 */
export function fastMatrix(): MatrixCase[] {
  return [
    {
      name: 'aidreams-260k fused fp16',
      source: AIDREAMS,
      form: 'fused',
      precision: 'fp16',
      checks: { lengths: [33], decode: { prefill: 30, total: 33 }, batch: [5, 33], greedy: 4 },
    },
  ];
}
