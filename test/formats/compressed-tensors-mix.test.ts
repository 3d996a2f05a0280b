// quantize --mix written as compressed-tensors config groups and GPTQ `dynamic` rules: every module in exactly one
// group at its planned bits, vLLM's own module matching (re-implemented here from its source) resolving each fused
// module to one scheme, and the folder read back through llmopt's readers giving exactly the planned weights.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dequantize } from '../../src/core/block-quant.js';
import { openCompressedTensors } from '../../src/formats/compressed-tensors-read.js';
import { dynamicRule } from '../../src/formats/gptq-checkpoint.js';
import { Checkpoint } from '../../src/formats/safetensors.js';
import { openHfModel } from '../../src/model/checkpoint.js';
import { inspectModel } from '../../src/model/inspect.js';
import { writeSyntheticLlama } from '../../src/model/synthetic.js';
import { quantizeRtn } from '../../src/passes/quantize/blockwise.js';
import { gridOf } from '../../src/passes/quantize/hf-formats.js';
import { quantize, type QuantizeOptions, type QuantizeReport } from '../../src/passes/quantize/quantize.js';
import { SAMPLE_TEXT, needsSharedModel, sharedModel, tempDir } from '../support.js';

// Four layers so edges8 leaves two at int4; every dim a multiple of 32, every output a multiple of 8.
let SOURCE = '';
before(async () => {
  const dir = tempDir();
  const config = {
    hidden_size: 64,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 128,
    vocab_size: 320,
    max_position_embeddings: 64,
    rope_theta: 10000,
    rope_scaling: null,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: 'float32' as const,
  };
  await writeSyntheticLlama(dir, { name: 'src', config, shards: 1 });
  SOURCE = join(dir, 'src');
});

const PROJECTIONS = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj'];
const MODULES = () => [0, 1, 2, 3].flatMap((l) => [...PROJECTIONS, 'mlp.down_proj'].map((p) => `model.layers.${l}.${p}`));
/** vLLM's Linear modules of a Llama layer: its name, its class and the checkpoint shards it stacks. */
const VLLM_LINEARS = [0, 1, 2, 3].flatMap((l) => {
  const at = (p: string) => `model.layers.${l}.${p}`;
  return [
    { name: at('self_attn.qkv_proj'), cls: 'QKVParallelLinear', shards: ['q_proj', 'k_proj', 'v_proj'].map((p) => at(`self_attn.${p}`)) },
    { name: at('self_attn.o_proj'), cls: 'RowParallelLinear', shards: [at('self_attn.o_proj')] },
    { name: at('mlp.gate_up_proj'), cls: 'MergedColumnParallelLinear', shards: [at('mlp.gate_proj'), at('mlp.up_proj')] },
    { name: at('mlp.down_proj'), cls: 'RowParallelLinear', shards: [at('mlp.down_proj')] },
  ];
});
const FUSED: Record<string, string[]> = { qkv_proj: ['q_proj', 'k_proj', 'v_proj'], gate_up_proj: ['gate_proj', 'up_proj'] };

async function run(o: Partial<QuantizeOptions>): Promise<{ dir: string; report: QuantizeReport; qc: any; bitsOf: Map<string, 4 | 8> }> {
  const dir = join(tempDir(), 'q');
  const report = await quantize(SOURCE, dir, {
    to: 'int4',
    method: 'rtn',
    blockSize: 32,
    symmetric: true,
    accuracyLevel: 0,
    exclude: [],
    quantizeEmbeddings: false,
    format: 'compressed-tensors',
    attention: 'fused',
    ...o,
  });
  assert.ok(report.mix, 'a mix plan');
  const raised = new Set(report.mix.raised);
  const excluded = new Set(report.excluded);
  const bitsOf = new Map(
    MODULES()
      .filter((m) => !excluded.has(m))
      .map((m) => [m, raised.has(m) ? 8 : 4] as [string, 4 | 8]),
  );
  const qc = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config;
  return { dir, report, qc, bitsOf };
}

// vLLM's compressed_tensors/utils.py, written again here: targets are exact names, "re:" regexes (re.match), or (second
// pass) substrings of the class name; a fused module matches only when all its shards do, and takes the first one's.
function ctMatch(qc: any, linear: (typeof VLLM_LINEARS)[number]): { group: string; bits: number } | 'ignored' | null {
  const equalOrRegex = (value: string, target: string, contains = false) =>
    target.startsWith('re:')
      ? new RegExp(`^(?:${target.slice(3)})`).test(value)
      : contains
        ? value.toLowerCase().includes(target.toLowerCase())
        : value === target;
  const proj = linear.name.split('.').at(-1)!;
  const ignoredShards = (FUSED[proj] ? linear.shards : [linear.name]).map((n) => qc.ignore.some((t: string) => equalOrRegex(n, t)));
  assert.ok(
    ignoredShards.every((x) => x === ignoredShards[0]),
    `${linear.name}: shards split by ignore (vLLM raises)`,
  );
  if (ignoredShards[0]) return 'ignored';
  const targetGroup = new Map<string, string>();
  for (const [group, g] of Object.entries<any>(qc.config_groups)) for (const t of g.targets) targetGroup.set(t, group);
  const targets = [...targetGroup.keys()];
  const fusedMatch = () => {
    if (!FUSED[proj]) return undefined;
    const matches = linear.shards.map((s) => targets.find((t) => equalOrRegex(s, t)));
    return matches.every(Boolean) ? matches[0] : undefined;
  };
  const target =
    targets.find((t) => equalOrRegex(linear.name, t)) ?? targets.find((t) => equalOrRegex(linear.cls, t, true)) ?? fusedMatch();
  if (target === undefined) return null;
  const group = targetGroup.get(target)!;
  return { group, bits: qc.config_groups[group].weights.num_bits };
}

/** The groups each module is named in (exact names; "Linear" covers every module not ignored). */
function groupsNaming(qc: any, module: string): string[] {
  return Object.entries<any>(qc.config_groups)
    .filter(([, g]) => g.targets.includes(module) || (g.targets.includes('Linear') && !qc.ignore.includes(module)))
    .map(([name]) => name);
}

/**
 * Each module's tensors decoded as vLLM / compressed-tensors would under the group vLLM matched for it (pack_quantized.py:
 * value i of a word at bits [i*bits, ...), minus 2^(bits-1); zero points packed along dim 0), not by llmopt's reader.
 */
async function assertDecodesByMatchedGroup(dir: string, qc: any, bitsOf: Map<string, 4 | 8>): Promise<void> {
  const ckpt = await Checkpoint.open(dir);
  const back = await openHfModel(dir);
  try {
    const words = async (name: string) => {
      const raw = await ckpt.readRaw(name);
      const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      return Int32Array.from({ length: raw.byteLength / 4 }, (_, i) => view.getInt32(i * 4, true));
    };
    for (const l of VLLM_LINEARS) {
      const m = ctMatch(qc, l);
      assert.ok(m && m !== 'ignored');
      const w = qc.config_groups[m.group].weights;
      for (const module of l.shards) {
        const [bits, g] = [w.num_bits as number, w.group_size as number];
        const [pf, mask, half] = [32 / bits, (1 << bits) - 1, 1 << (bits - 1)];
        const [rows, cols] = [ckpt.info(`${module}.weight_scale`).shape[0]!, ckpt.info(`${module}.weight_packed`).shape[1]! * pf];
        const packed = await words(`${module}.weight_packed`);
        const scales = await ckpt.readFloat32(`${module}.weight_scale`);
        const zp = w.symmetric ? null : await words(`${module}.weight_zero_point`);
        assert.equal(ckpt.has(`${module}.weight_zero_point`), !w.symmetric, module);
        const got = new Float32Array(rows * cols);
        for (let r = 0; r < rows; r++)
          for (let i = 0; i < cols; i++) {
            const q = ((packed[r * (cols / pf) + Math.floor(i / pf)]! >>> ((i % pf) * bits)) & mask) - half;
            const k = Math.floor(i / g);
            const z = zp ? ((zp[Math.floor(r / pf) * (cols / g) + k]! >>> ((r % pf) * bits)) & mask) - half : 0;
            got[r * cols + i] = (q - z) * scales[r * (cols / g) + k]!;
          }
        assert.deepEqual(got, await back.weights.readFloat32(`${module}.weight`), `${module} decoded at ${bits} bits`);
        assert.equal(bits, bitsOf.get(module));
      }
    }
  } finally {
    await back.close();
    await ckpt.close();
  }
}

/** Reading the folder back through llmopt gives exactly RTN at each module's planned width and the format's grid. */
async function assertReadsBackPlanned(dir: string, format: 'compressed-tensors' | 'gptq', bitsOf: Map<string, 4 | 8>, symmetric: boolean) {
  const source = await Checkpoint.open(SOURCE);
  const back = await openHfModel(dir);
  try {
    for (const [module, bits] of bitsOf) {
      const [rows, cols] = source.info(`${module}.weight`).shape as [number, number];
      // compressed-tensors' raised int8 is symmetric (vLLM has no 8-bit zero-point kernel); GPTQ's keeps the base's.
      const sym = format === 'compressed-tensors' && bits === 8 ? true : symmetric;
      const cfg = { bits, blockSize: 32, symmetric: sym, ...gridOf(format, sym) };
      const want = dequantize(quantizeRtn(await source.readFloat32(`${module}.weight`), rows, cols, cfg));
      assert.deepEqual(await back.weights.readFloat32(`${module}.weight`), want, `${module} at ${bits} bits`);
    }
  } finally {
    await back.close();
    await source.close();
  }
  // inspect reads each module's bits from the folder's codes.
  assert.deepEqual((await inspectModel(dir)).weightBits, Object.fromEntries(bitsOf));
}

for (const [mix, symmetric] of [
  ['edges8', true],
  ['k-quant-m', false],
] as const) {
  test(`compressed-tensors --mix ${mix} ${symmetric ? 'symmetric' : 'asymmetric'}: one group per width, as vLLM matches them`, async () => {
    const { dir, qc, bitsOf } = await run({ mix, symmetric });
    const groups = Object.values<any>(qc.config_groups);
    assert.equal(groups.length, 2);
    for (const g of groups) assert.ok(!g.targets.includes('Linear'), 'no group targets the class: a fused module would take it');
    assert.deepEqual(groups.map((g) => [g.weights.num_bits, g.weights.symmetric, g.weights.group_size, g.format]).sort(), [
      [4, symmetric, 32, 'pack-quantized'],
      [8, true, 32, 'pack-quantized'],
    ]);
    for (const [module, bits] of bitsOf) {
      const named = groupsNaming(qc, module);
      assert.equal(named.length, 1, `${module} in ${named.join(', ') || 'no group'}`);
      assert.equal(qc.config_groups[named[0]!].weights.num_bits, bits, module);
    }
    assert.deepEqual(qc.ignore, ['lm_head']);
    // k-quant-m raises v_proj: its q and k come along, as vLLM runs them as one qkv_proj.
    if (mix === 'k-quant-m') assert.ok([...bitsOf].some(([m, b]) => m.endsWith('q_proj') && b === 8));
    for (const l of VLLM_LINEARS) {
      const m = ctMatch(qc, l);
      assert.ok(m && m !== 'ignored', `${l.name} matches a group`);
      for (const s of l.shards) assert.equal(m.bits, bitsOf.get(s), `${l.name}: vLLM builds ${m.bits}-bit, ${s} planned ${bitsOf.get(s)}`);
    }
    await assertReadsBackPlanned(dir, 'compressed-tensors', bitsOf, symmetric);
    await assertDecodesByMatchedGroup(dir, qc, bitsOf);
  });
}

test('gptq --mix: the raised modules as "+:" dynamic rules with their bits, matched by vLLM under its fused names', async () => {
  const { dir, qc, bitsOf } = await run({ format: 'gptq', mix: 'k-quant-m', symmetric: false, exclude: ['model.layers.1.mlp.up_proj'] });
  assert.equal(qc.bits, 4);
  assert.equal(qc.sym, false);
  // vLLM's gptq_utils.py get_dynamic_override: the first rule whose regex re.match-es the module's prefix wins.
  const rule = (name: string) => {
    for (const [pattern, value] of Object.entries<any>(qc.dynamic ?? {})) {
      if (new RegExp(`^(?:${pattern.replace(/^[+-]:/, '')})`).test(name)) return pattern.startsWith('-:') ? false : value;
    }
    return null;
  };
  for (const l of VLLM_LINEARS) {
    const r = rule(l.name);
    const planned = l.shards.map((s) => bitsOf.get(s) ?? 'float');
    assert.ok(
      planned.every((b) => b === planned[0]),
      `${l.name}: shards at ${planned.join(', ')}`,
    );
    if (planned[0] === 'float') assert.equal(r, false, `${l.name} skipped`);
    else assert.equal(r?.bits ?? qc.bits, planned[0], l.name);
    // GPTQModel and transformers look modules up by the stored names.
    for (const s of l.shards) if (planned[0] !== 'float') assert.equal(rule(s)?.bits ?? qc.bits, planned[0], s);
  }
  const quantizeConfig = JSON.parse(readFileSync(join(dir, 'quantize_config.json'), 'utf8'));
  assert.deepEqual(quantizeConfig.dynamic, qc.dynamic);
  await assertReadsBackPlanned(dir, 'gptq', bitsOf, false);
});

test('--mix auto for compressed-tensors spends on whole fused groups within the budget', async () => {
  const { report, bitsOf, qc } = await run({ mix: 'auto', targetBits: 6, calib: SAMPLE_TEXT, calibSamples: 4 });
  for (const l of VLLM_LINEARS) {
    const bits = new Set(l.shards.map((s) => bitsOf.get(s)));
    assert.equal(bits.size, 1, `${l.name}: shards at ${[...bits].join(', ')}`);
  }
  assert.ok(report.mix!.raised.length > 0 && report.mix!.bitsPerWeight <= 6, `${report.mix!.bitsPerWeight}`);
  for (const l of VLLM_LINEARS) {
    const m = ctMatch(qc, l);
    assert.ok(m && m !== 'ignored');
    assert.equal(m.bits, bitsOf.get(l.shards[0]!));
  }
});

test('Phi-3 stores q/k/v and gate/up fused: a mix puts each stored module in one group, named as stored', {
  skip: needsSharedModel('phi3-tiny'),
}, async () => {
  const dir = join(tempDir(), 'q');
  const report = await quantize(sharedModel('phi3-tiny'), dir, {
    to: 'int4',
    method: 'rtn',
    blockSize: 32,
    symmetric: true,
    accuracyLevel: 0,
    exclude: ['*down_proj'],
    quantizeEmbeddings: false,
    format: 'compressed-tensors',
    attention: 'fused',
    mix: 'k-quant-m',
  });
  const raised = new Set(report.mix!.raised);
  const qc = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config;
  const ckpt = await Checkpoint.open(dir);
  const back = await openCompressedTensors(dir);
  try {
    const stored = ckpt
      .names()
      .filter((n) => n.endsWith('.weight_packed'))
      .map((n) => n.slice(0, -'.weight_packed'.length));
    assert.ok(stored.some((m) => m.endsWith('qkv_proj')) && stored.some((m) => m.endsWith('gate_up_proj')), stored.join(', '));
    for (const module of stored) {
      const named = groupsNaming(qc, module);
      assert.equal(named.length, 1, `${module} in ${named.join(', ') || 'no group'}`);
      // The stored qkv_proj is raised exactly when the mix raised its q, k and v (all of them: the tie).
      const parts = module.endsWith('qkv_proj')
        ? ['q_proj', 'k_proj', 'v_proj']
        : module.endsWith('gate_up_proj')
          ? ['gate_proj', 'up_proj']
          : [];
      const names = parts.length ? parts.map((p) => module.replace(/[a-z_]+$/, p)) : [module];
      const bits = new Set(names.map((n) => (raised.has(n) ? 8 : 4)));
      assert.equal(bits.size, 1, module);
      assert.equal(qc.config_groups[named[0]!].weights.num_bits, [...bits][0], module);
      assert.equal((await back.readQuantized(module)).bits, [...bits][0], `${module} read back`);
    }
    assert.ok(
      [...raised].some((m) => m.endsWith('q_proj')),
      'k-quant-m raised a v_proj, and its q_proj with it',
    );
  } finally {
    await back.close();
    await ckpt.close();
  }
});

test("GPTQ's dynamic rules read as vLLM reads them: first match wins, '-:' skips, a bare key is positive", () => {
  const dynamic = {
    '-:.*\\.mlp\\.down_proj': {},
    '+:model\\.layers\\.0\\..*': { bits: 8 },
    'model\\.layers\\.[12]\\.self_attn': { bits: 8, group_size: 64 },
  };
  assert.equal(dynamicRule(dynamic, 'model.layers.0.mlp.down_proj', 'c.json'), false);
  assert.deepEqual(dynamicRule(dynamic, 'model.layers.0.self_attn.q_proj', 'c.json'), { bits: 8 });
  // re.match anchors at the start only: a prefix of the name matches.
  assert.deepEqual(dynamicRule(dynamic, 'model.layers.2.self_attn.o_proj', 'c.json'), { bits: 8, group_size: 64 });
  assert.equal(dynamicRule(dynamic, 'model.layers.3.self_attn.o_proj', 'c.json'), null);
  assert.equal(dynamicRule(dynamic, 'x.model.layers.0.mlp.up_proj', 'c.json'), null);
  assert.equal(dynamicRule(undefined, 'm', 'c.json'), null);
  assert.throws(
    () => dynamicRule({ '+:(?P<x>a)': {} }, 'a', 'c.json'),
    /c\.json: quantization_config\.dynamic rule "\+:\(\?P<x>a\)" is not a regex/,
  );
});
