// Child process of the WebGPU suite: runs one artifact on the CPU and on WebGPU through llmopt's runtime
// and prints the figures the tests judge (max |logit difference| per check, greedy ids, serving, drafts).
// Spawned with the Vulkan environment set (LD_LIBRARY_PATH, VK_ICD_FILENAMES), which Dawn reads at start.
import { forwardOnce, openModel, type CausalLM } from '../../src/runtime/model.js';
import { generate } from '../../src/runtime/generate.js';
import { GREEDY } from '../../src/runtime/sampling.js';
import { serve } from '../../src/runtime/scheduler.js';
import { generateWithDraft } from '../../src/runtime/speculative.js';
import { loadEvalWindows } from '../../src/eval/dataset.js';
import { evaluate } from '../../src/eval/evaluate.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';

/** What to check for one artifact (argv[2], JSON). */
export interface CheckSpec {
  dir: string;
  /** Prompt lengths whose full-pass logits are compared with the CPU's. */
  lengths: number[];
  /** Cached decoding: prefill `prefill` tokens, then one token per step up to `total`, against the CPU's full pass. */
  decode?: { prefill: number; total: number };
  /** A padded batch of rows of these lengths against each row alone. */
  batch?: number[];
  /** Greedy tokens generated on both devices from a prompt of 8 ids. */
  greedy?: number;
  /** Continuous batching: this many requests through 2 slots, greedy, against the CPU's completions. */
  serve?: number;
  /** Speculative decoding with this draft artifact, greedy, against the CPU's plain greedy ids. */
  draft?: string;
  /** eval: KL against `reference` (run on the CPU) over the first `limit` lines of `data`, on both devices. */
  eval?: { data: string; reference: string; limit: number };
}

export interface CheckResult {
  dir: string;
  description: string;
  /** Largest |WebGPU - CPU| per prompt length, over every position. */
  lengths: Record<string, number>;
  decode?: number;
  batch?: number;
  greedy?: { cpu: number[]; webgpu: number[] };
  serve?: { cpu: number[][]; webgpu: number[][]; policy: string };
  draft?: { cpu: number[]; webgpu: number[]; accepted: number };
  eval?: { cpu: number; webgpu: number; tokens: number };
  seconds: number;
}

/** Deterministic prompt ids inside the vocabulary, past the special tokens. */
export const promptIds = (n: number, vocab: number, offset = 0) =>
  Array.from({ length: n }, (_, i) => (((i + offset) * 37 + 5) % (vocab - 3)) + 3);

function maxDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** All positions' logits of one row, flattened. */
async function fullPass(model: CausalLM, ids: number[]): Promise<Float32Array> {
  return (await forwardOnce(model, [ids])).data.slice();
}

async function cachedDecode(model: CausalLM, ids: number[], prefill: number): Promise<Float32Array[]> {
  const cache = model.createCache(1, ids.length);
  try {
    const out: Float32Array[] = [];
    const first = await model.forward(cache, [ids.slice(0, prefill)]);
    for (let s = 0; s < prefill; s++) out.push(first.at(0, s).slice());
    for (let t = prefill; t < ids.length; t++) out.push((await model.forward(cache, [[ids[t]!]])).at(0, 0).slice());
    return out;
  } finally {
    cache.release();
  }
}

async function run(spec: CheckSpec): Promise<CheckResult> {
  const t0 = performance.now();
  const cpu = await openModel(spec.dir, { device: 'cpu' });
  const gpu = await openModel(spec.dir, { device: 'webgpu' });
  const V = gpu.spec.vocabSize;
  const r: CheckResult = { dir: spec.dir, description: gpu.description, lengths: {}, seconds: 0 };
  try {
    for (const L of spec.lengths) {
      const ids = promptIds(L, V);
      r.lengths[L] = maxDiff(await fullPass(cpu, ids), await fullPass(gpu, ids));
    }
    if (spec.decode) {
      const ids = promptIds(spec.decode.total, V);
      const full = await fullPass(cpu, ids);
      const steps = await cachedDecode(gpu, ids, spec.decode.prefill);
      r.decode = Math.max(...steps.map((l, s) => maxDiff(full.subarray(s * V, (s + 1) * V), l)));
    }
    if (spec.batch) {
      const rows = spec.batch.map((n, b) => promptIds(n, V, 11 * b));
      const batched = await forwardOnce(gpu, rows);
      let worst = 0;
      for (const [b, row] of rows.entries()) {
        const alone = await forwardOnce(gpu, [row]);
        for (let s = 0; s < row.length; s++) worst = Math.max(worst, maxDiff(batched.at(b, s), alone.at(0, s)));
      }
      r.batch = worst;
    }
    const opts = { maxNewTokens: spec.greedy ?? 12, sampling: GREEDY, stopTokens: [] as number[] };
    if (spec.greedy) {
      const ids = [promptIds(8, V)];
      r.greedy = { cpu: (await generate(cpu, ids, opts)).tokens[0]!, webgpu: (await generate(gpu, ids, opts)).tokens[0]! };
    }
    if (spec.serve) {
      const requests = Array.from({ length: spec.serve }, (_, i) => ({ prompt: promptIds(4 + 5 * i, V, i), maxNewTokens: 6 + 2 * i }));
      const served = async (m: CausalLM) => serve(m, requests, { slots: 2, stopTokens: [] });
      const [a, b] = [await served(cpu), await served(gpu)];
      r.serve = { cpu: a.completions.map((c) => c.tokens), webgpu: b.completions.map((c) => c.tokens), policy: b.policy };
    }
    if (spec.draft) {
      const draft = await openModel(spec.draft, { device: 'webgpu' });
      try {
        const ids = [promptIds(8, V)];
        const s = await generateWithDraft(gpu, draft, ids, { ...opts, draftTokens: 4 });
        r.draft = { cpu: (await generate(cpu, ids, opts)).tokens[0]!, webgpu: s.tokens[0]!, accepted: s.accepted };
      } finally {
        await draft.release();
      }
    }
    if (spec.eval) {
      const reference = await openModel(spec.eval.reference, { device: 'cpu' });
      try {
        const windows = loadEvalWindows(spec.eval.data, loadTokenizer(spec.dir), gpu.spec.maxPositions, spec.eval.limit);
        const kl = async (m: CausalLM) => (await evaluate(m, windows, reference, { batchSize: 4 })).reference!.kl;
        r.eval = { cpu: await kl(cpu), webgpu: await kl(gpu), tokens: windows.reduce((a, w) => a + w.ids.length - 1, 0) };
      } finally {
        await reference.release();
      }
    }
  } finally {
    await Promise.all([cpu.release(), gpu.release()]);
  }
  r.seconds = (performance.now() - t0) / 1000;
  return r;
}

const specs = JSON.parse(process.argv[2]!) as CheckSpec[];
const results: CheckResult[] = [];
for (const spec of specs) results.push(await run(spec));
process.stdout.write(`${JSON.stringify(results)}\n`);
