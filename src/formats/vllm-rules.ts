// vLLM's rules for weight-only int checkpoints, checked before a compressed-tensors folder is written: which Linear
// modules vLLM fuses, how its fused loader places packed zero points, and which kernels can serve a module.
import { layerTensorNames, projectionShape, type DecoderSpec, type Projection } from '../core/spec.js';

/** The dtypes vLLM serves a weight-only int checkpoint in (its activations, scales and output). */
export const SERVE_DTYPES = ['bfloat16', 'float16'] as const;
export type ServeDtype = (typeof SERVE_DTYPES)[number];

/** One Linear module as vLLM builds it: its name and the checkpoint modules (shards) whose rows it stacks. */
export interface VllmLinear {
  /** vLLM's module name, e.g. model.layers.0.self_attn.qkv_proj. */
  name: string;
  /** The shards in order: the per-projection modules (q_proj, k_proj, ...), each with its output rows. */
  shards: Array<{ module: string; rows: number }>;
  /** in_features. */
  cols: number;
}

/** The weight scheme of the checkpoint: one config group. */
export interface VllmScheme {
  bits: 4 | 8;
  symmetric: boolean;
  groupSize: number;
}

/*
 * Fusion: vLLM's Llama-family models (vllm/model_executor/models/llama.py, qwen2.py, qwen3.py, gemma2.py, gemma3.py,
 * phi3.py via llama.py) declare packed_modules_mapping = {qkv_proj: [q_proj, k_proj, v_proj], gate_up_proj: [gate_proj,
 * up_proj]} and build QKVParallelLinear / MergedColumnParallelLinear over the shards; o_proj and down_proj stay single.
 * Phi-3 stores qkv_proj and gate_up_proj fused already; vLLM splits them by the same shard sizes on load.
 */
const FUSED: Array<{ module: string; parts: Projection[] }> = [
  { module: 'self_attn.qkv_proj', parts: ['q', 'k', 'v'] },
  { module: 'mlp.gate_up_proj', parts: ['gate', 'up'] },
  { module: 'self_attn.o_proj', parts: ['o'] },
  { module: 'mlp.down_proj', parts: ['down'] },
];

/** Every decoder-layer Linear of `spec` as vLLM builds it (lm_head aside: vLLM never quantizes it as a Linear group). */
export function vllmLinears(spec: DecoderSpec): VllmLinear[] {
  const out: VllmLinear[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const n = layerTensorNames(i);
    for (const f of FUSED) {
      const shards = f.parts.map((p) => ({ module: n[p], rows: projectionShape(spec, p)[0] }));
      out.push({ name: `model.layers.${i}.${f.module}`, shards, cols: projectionShape(spec, f.parts[0]!)[1] });
    }
  }
  return out;
}

/**
 * The fused modules whose shards are partly quantized. vLLM refuses to load them: should_ignore_layer in
 * compressed_tensors/utils.py raises "Found a different quantization schemes for [...] vLLM requires all to use the
 * same scheme" when some shards of a fused layer are in `ignore` and others are not.
 */
export function splitFusedModules(linears: VllmLinear[], quantized: ReadonlySet<string>): VllmLinear[] {
  return linears.filter((l) => {
    const count = l.shards.filter((s) => quantized.has(s.module)).length;
    return count > 0 && count < l.shards.length;
  });
}

/**
 * The first shard whose packed zero points vLLM cannot place, as a clause (null when all fit). Zero points pack 32/bits
 * output rows per int32 along dim 0; vLLM allocates output_size_per_partition // pack_factor rows
 * (compressed_tensors_wNa16.py, create_weights) and its fused loader places a shard at shard_offset // pack_factor,
 * copying shard_size // pack_factor rows (PackedvLLMParameter.adjust_shard_indexes_for_packing, vllm/model_executor/
 * parameter.py). A shard whose rows are not a multiple of 32/bits loses its last partial word and shifts the next
 * shard's zero points, so vLLM computes wrong weights; a lone module of such a size does not load at all.
 */
export function zeroPointShardProblem(linears: VllmLinear[], bits: 4 | 8): string | null {
  const perWord = 32 / bits;
  for (const l of linears) {
    const bad = l.shards.find((s) => s.rows % perWord !== 0);
    if (bad) {
      const where = l.shards.length > 1 ? ` (a shard of the fused ${l.name.split('.').at(-1)})` : '';
      return `${bad.module} has ${bad.rows} output rows${where}, not a multiple of ${perWord}`;
    }
  }
  return null;
}

/** A kernel's verdict on one module: null when it serves it, else the rule it breaks. */
type KernelRule = (l: { n: number; k: number }, s: VllmScheme, dtype: ServeDtype) => string | null;

const mod = (what: string, value: number, m: number) => (value % m === 0 ? null : `${what} ${value} % ${m} != 0`);
const first = (...reasons: Array<string | null>) => reasons.find((r) => r !== null) ?? null;

/*
 * The mixed-precision kernels vLLM chooses from on NVIDIA GPUs (kernels/mixed_precision/__init__.py, _POSSIBLE_KERNELS;
 * choose_mp_linear_kernel takes the first whose can_implement passes). CUTLASS W4A8 needs fp8 activations, AllSpark
 * 8-bit per-channel on Ampere only, BitBLAS an extra package and Conch ROCm, so the three that serve these
 * checkpoints generally are checked. llmopt writes strategy "group" only, so per-channel (-1) never comes up.
 */
const KERNELS: Array<{ name: string; rule: KernelRule }> = [
  {
    // marlin.py can_implement + utils/marlin_utils.py: query_marlin_supported_quant_types (zero points: uint4 only),
    // MARLIN_SUPPORTED_GROUP_SIZES [-1, 32, 64, 128], verify_marlin_supports_shape (GPTQ_MARLIN_MIN_THREAD_N 64,
    // GPTQ_MARLIN_MIN_THREAD_K 128, group_size divides in_features). Compute capability 8.0+ (7.5+ in recent releases).
    name: 'Marlin',
    rule: ({ n, k }, s) =>
      first(
        !s.symmetric && s.bits !== 4 ? 'zero points with 4 bits only' : null,
        [32, 64, 128].includes(s.groupSize) ? null : `group size ${s.groupSize} not in 32, 64, 128`,
        mod('out_features', n, 64),
        mod('in_features', k, 128),
        mod('in_features', k, s.groupSize),
      ),
  },
  {
    // machete.py can_implement + utils/machete_utils.py: Hopper (capability 9.0) only; group sizes [-1, 64, 128] with
    // fp16/bf16 activations; check_machete_supports_shape: in_features % 64 and out_features % 128.
    name: 'Machete (Hopper)',
    rule: ({ n, k }, s) =>
      first(
        [64, 128].includes(s.groupSize) ? null : `group size ${s.groupSize} not in 64, 128`,
        mod('in_features', k, 64),
        mod('out_features', n, 128),
      ),
  },
  {
    // exllama.py can_implement: float16 activations only; uint4b8 / uint8b128 (no zero points); out_features a
    // multiple of the pack factor; group_size divides in_features.
    name: 'Exllama',
    rule: ({ n, k }, s, dtype) =>
      first(
        dtype !== 'float16' ? 'float16 only' : null,
        s.symmetric ? null : 'no zero points',
        mod('out_features', n, 32 / s.bits),
        mod('in_features', k, s.groupSize),
      ),
  },
];

/**
 * Why no vLLM kernel can serve `linear` (rows summed over its shards, as vLLM allocates it at tensor parallel size 1)
 * at `dtype`: one clause per kernel, or null when one of them can.
 */
export function vllmKernelProblem(linear: VllmLinear, scheme: VllmScheme, dtype: ServeDtype): string | null {
  const shape = { n: linear.shards.reduce((a, s) => a + s.rows, 0), k: linear.cols };
  const reasons: string[] = [];
  for (const kernel of KERNELS) {
    const why = kernel.rule(shape, scheme, dtype);
    if (why === null) return null;
    reasons.push(`${kernel.name}: ${why}`);
  }
  return `out ${shape.n} x in ${shape.k}: ${reasons.join('; ')}`;
}

/** Why no vLLM kernel takes `scheme`'s group size at `dtype` whatever the shapes (null when one does). */
export function vllmGroupSizeProblem(scheme: VllmScheme, dtype: ServeDtype): string | null {
  // A shape every kernel's divisibility rules accept leaves only the group-size and type rules.
  const easy = { name: '', shards: [{ module: '', rows: 128 * 1024 }], cols: 128 * 1024 };
  const why = vllmKernelProblem(easy, scheme, dtype);
  return why === null ? null : why.replace(/^out \d+ x in \d+: /, '');
}
