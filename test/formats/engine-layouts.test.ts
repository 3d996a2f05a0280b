// An independent check of quantize's engine formats: each checkpoint is read here with the format's published rules,
// written from the engines' own source (not from llmopt's writers or readers), its config validated as the loader
// does, and its dequantized weights compared with the source within half a scale; llmopt's reader must agree.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile, Checkpoint } from '../../src/formats/safetensors.js';
import { writeSyntheticLlama } from '../../src/model/synthetic.js';
import { openHfModel } from '../../src/model/checkpoint.js';
import { quantize, type QuantizeOptions } from '../../src/passes/quantize/quantize.js';
import { SAMPLE_TEXT, tempDir } from '../support.js';

// Every dim a multiple of 32 and of 8, so every module of every format is quantized.
let SOURCE = '';
before(async () => {
  const dir = tempDir();
  const config = {
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 128,
    vocab_size: 320,
    max_position_embeddings: 64,
    rope_theta: 500000,
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

const BASE: QuantizeOptions = {
  to: 'int4',
  method: 'rtn',
  blockSize: 32,
  symmetric: true,
  accuracyLevel: 0,
  exclude: [],
  quantizeEmbeddings: false,
  format: 'onnx',
  attention: 'fused',
};
const PROJECTIONS = [
  'self_attn.q_proj',
  'self_attn.k_proj',
  'self_attn.v_proj',
  'self_attn.o_proj',
  'mlp.gate_proj',
  'mlp.up_proj',
  'mlp.down_proj',
];
const modules = () => [0, 1].flatMap((l) => PROJECTIONS.map((p) => `model.layers.${l}.${p}`));

/** Little-endian int32 words of a tensor. */
function words(raw: Uint8Array): Int32Array {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Int32Array.from({ length: raw.byteLength / 4 }, (_, i) => view.getInt32(i * 4, true));
}

/** What one format's reading gives per module: dequantized [out, in] weights, the scale of each weight, the signed codes. */
interface Decoded {
  weight: Float64Array;
  scaleOf: Float64Array;
  signedCodes: Int32Array | null;
}

async function readAll(dir: string): Promise<Map<string, { info: { dtype: string; shape: number[] }; raw: Uint8Array }>> {
  const ckpt = await Checkpoint.open(dir);
  const out = new Map<string, { info: { dtype: string; shape: number[] }; raw: Uint8Array }>();
  for (const name of ckpt.names()) out.set(name, { info: ckpt.info(name), raw: await ckpt.readRaw(name) });
  await ckpt.close();
  return out;
}

/*
 * compressed-tensors, as vLLM loads it and compressed-tensors decompresses it:
 * - config: compressed_tensors.py _quantization_scheme_map_from_config + _is_wNa16_group_channel (weights int 4/8,
 *   strategy group/channel, static, no input activations), format per group else top level: pack-quantized.
 * - shapes: compressed_tensors_wNa16.py create_weights: weight_packed [out, in // pack_factor], weight_scale
 *   [out, in // group_size], weight_shape [2], weight_zero_point [out // pack_factor, in // group_size].
 * - values: compressors/quantized_compressors/pack_quantized.py unpack_from_int32 (value i of a word at bits
 *   [i*bits, (i+1)*bits), minus 2^(bits-1) for the signed code); quantization/lifecycle/forward.py dequantize
 *   (q - zp) * scale.
 */
function decodeCompressedTensors(config: any, tensors: Awaited<ReturnType<typeof readAll>>, module: string): Decoded {
  const qc = config.quantization_config;
  assert.equal(qc.quant_method, 'compressed-tensors');
  const group = qc.config_groups.group_0;
  const format = group.format ?? qc.format;
  assert.equal(format, 'pack-quantized');
  assert.deepEqual(group.targets, ['Linear']);
  assert.equal(group.input_activations, null);
  const w = group.weights;
  assert.ok([4, 8].includes(w.num_bits) && w.type === 'int' && w.dynamic === false && ['group', 'channel'].includes(w.strategy));
  assert.equal(typeof qc.version, 'string');
  const bits = w.num_bits as number;
  const pf = 32 / bits;
  const mask = (1 << bits) - 1;
  const offset = 1 << (bits - 1);
  const shapeRaw = tensors.get(`${module}.weight_shape`)!;
  const view = new DataView(shapeRaw.raw.buffer, shapeRaw.raw.byteOffset);
  const [out, inF] = [Number(view.getBigInt64(0, true)), Number(view.getBigInt64(8, true))];
  const g = w.strategy === 'channel' ? inF : w.group_size;
  const packed = tensors.get(`${module}.weight_packed`)!;
  const scale = tensors.get(`${module}.weight_scale`)!;
  assert.deepEqual(packed.info.shape, [out, inF / pf], `${module}.weight_packed as vLLM allocates it`);
  assert.deepEqual(scale.info.shape, [out, inF / g]);
  const scales = new Float32Array(scale.raw.buffer.slice(scale.raw.byteOffset, scale.raw.byteOffset + scale.raw.byteLength));
  const codeWords = words(packed.raw);
  let zeros: Int32Array | null = null;
  if (!w.symmetric) {
    const zp = tensors.get(`${module}.weight_zero_point`)!;
    assert.deepEqual(zp.info.shape, [Math.floor(out / pf), inF / g], 'zero points as vLLM allocates them (floor)');
    const zw = words(zp.raw);
    zeros = new Int32Array(out * (inF / g));
    for (let r = 0; r < out; r++)
      for (let c = 0; c < inF / g; c++)
        zeros[r * (inF / g) + c] = ((zw[Math.floor(r / pf) * (inF / g) + c]! >>> ((r % pf) * bits)) & mask) - offset;
  } else assert.ok(!tensors.has(`${module}.weight_zero_point`));
  const weight = new Float64Array(out * inF);
  const scaleOf = new Float64Array(out * inF);
  const signedCodes = new Int32Array(out * inF);
  for (let r = 0; r < out; r++) {
    for (let i = 0; i < inF; i++) {
      const q = ((codeWords[r * (inF / pf) + Math.floor(i / pf)]! >>> ((i % pf) * bits)) & mask) - offset;
      const s = scales[r * (inF / g) + Math.floor(i / g)]!;
      const z = zeros ? zeros[r * (inF / g) + Math.floor(i / g)]! : 0;
      weight[r * inF + i] = (q - z) * s;
      scaleOf[r * inF + i] = s;
      signedCodes[r * inF + i] = q;
    }
  }
  return { weight, scaleOf, signedCodes: w.symmetric ? signedCodes : null };
}

/*
 * GPTQ, as vLLM's gptq.py (GPTQConfig.from_config: bits, group_size, desc_act, lm_head; create_weights: qweight
 * [in // pack_factor, out], g_idx [in], qzeros [in // group_size, out // pack_factor], scales [in // group_size, out])
 * and AutoGPTQ's / GPTQModel's dequantization read it: qweight unpacked along dim 0 (input row i of a word at bits
 * (i % pf) * bits), qzeros along dim 1, plus 1 (the v1 "gptq" checkpoint format), w = (q - z) * s by g_idx.
 */
function decodeGptq(config: any, tensors: Awaited<ReturnType<typeof readAll>>, module: string): Decoded {
  const qc = config.quantization_config;
  assert.equal(qc.quant_method, 'gptq');
  assert.equal(qc.checkpoint_format, 'gptq');
  assert.ok([2, 3, 4, 8].includes(qc.bits) && Number.isInteger(qc.group_size) && qc.desc_act === false && qc.lm_head === false);
  const bits = qc.bits as number;
  const pf = 32 / bits;
  const mask = (1 << bits) - 1;
  const qweight = tensors.get(`${module}.qweight`)!;
  const [inF, out] = [qweight.info.shape[0]! * pf, qweight.info.shape[1]!];
  const groups = inF / qc.group_size;
  assert.deepEqual(tensors.get(`${module}.qzeros`)!.info.shape, [groups, out / pf]);
  assert.deepEqual(tensors.get(`${module}.scales`)!.info.shape, [groups, out]);
  assert.equal(tensors.get(`${module}.scales`)!.info.dtype, 'F16');
  assert.deepEqual(tensors.get(`${module}.g_idx`)!.info.shape, [inF]);
  const gIdx = words(tensors.get(`${module}.g_idx`)!.raw);
  const qw = words(qweight.raw);
  const qz = words(tensors.get(`${module}.qzeros`)!.raw);
  const sRaw = tensors.get(`${module}.scales`)!.raw;
  const scales = Float64Array.from({ length: groups * out }, (_, k) => f16(sRaw[2 * k]! | (sRaw[2 * k + 1]! << 8)));
  const weight = new Float64Array(out * inF);
  const scaleOf = new Float64Array(out * inF);
  const signedCodes = new Int32Array(out * inF);
  for (let i = 0; i < inF; i++) {
    const g = gIdx[i]!;
    for (let o = 0; o < out; o++) {
      const q = (qw[Math.floor(i / pf) * out + o]! >>> ((i % pf) * bits)) & mask;
      const z = ((qz[g * (out / pf) + Math.floor(o / pf)]! >>> ((o % pf) * bits)) & mask) + 1;
      const s = scales[g * out + o]!;
      weight[o * inF + i] = (q - z) * s;
      scaleOf[o * inF + i] = s;
      signedCodes[o * inF + i] = q - (1 << (bits - 1));
    }
  }
  return { weight, scaleOf, signedCodes: qc.sym ? signedCodes : null };
}

/*
 * AWQ (GEMM), as vLLM's awq.py (AWQConfig.from_config: 4 bits only, group_size, zero_point; create_weights: qweight
 * [in, out // 8], qzeros [in // group_size, out // 8], scales [in // group_size, out]) and AutoAWQ's unpack_awq /
 * reverse_awq_order read it: unpack each word by shifts 0, 4, ..., 28, then column 8j + c is slot
 * AWQ_REVERSE_ORDER[c] = [0, 4, 1, 5, 2, 6, 3, 7][c]; w = (q - z) * s.
 */
function decodeAwq(config: any, tensors: Awaited<ReturnType<typeof readAll>>, module: string): Decoded {
  const qc = config.quantization_config;
  assert.equal(qc.quant_method, 'awq');
  assert.equal(qc.bits ?? qc.w_bit, 4);
  assert.equal(qc.version, 'gemm');
  assert.equal(qc.zero_point, true);
  const reverse = [0, 4, 1, 5, 2, 6, 3, 7];
  const qweight = tensors.get(`${module}.qweight`)!;
  const [inF, out] = [qweight.info.shape[0]!, qweight.info.shape[1]! * 8];
  const g = qc.group_size as number;
  assert.deepEqual(tensors.get(`${module}.qzeros`)!.info.shape, [inF / g, out / 8]);
  assert.deepEqual(tensors.get(`${module}.scales`)!.info.shape, [inF / g, out]);
  const unpack = (w: Int32Array, rows: number) => {
    const values = new Int32Array(rows * out);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < out; c++) values[r * out + c] = (w[r * (out / 8) + Math.floor(c / 8)]! >>> (4 * reverse[c % 8]!)) & 15;
    return values;
  };
  const q = unpack(words(qweight.raw), inF);
  const z = unpack(words(tensors.get(`${module}.qzeros`)!.raw), inF / g);
  const sRaw = tensors.get(`${module}.scales`)!.raw;
  const weight = new Float64Array(out * inF);
  const scaleOf = new Float64Array(out * inF);
  for (let i = 0; i < inF; i++) {
    for (let o = 0; o < out; o++) {
      const k = Math.floor(i / g) * out + o;
      const s = f16(sRaw[2 * k]! | (sRaw[2 * k + 1]! << 8));
      weight[o * inF + i] = (q[i * out + o]! - z[k]!) * s;
      scaleOf[o * inF + i] = s;
    }
  }
  return { weight, scaleOf, signedCodes: null };
}

/** IEEE half bits to a number (written here, not taken from llmopt's dtype code). */
function f16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 31;
  const frac = h & 1023;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const DECODERS = { 'compressed-tensors': decodeCompressedTensors, gptq: decodeGptq, awq: decodeAwq } as const;

for (const [format, symmetric] of [
  ['compressed-tensors', true],
  ['compressed-tensors', false],
  ['gptq', true],
  ['gptq', false],
  ['awq', false],
  ['awq', true],
] as const) {
  test(`${format} ${symmetric ? 'symmetric' : 'asymmetric'}: the engine's rules read back the source within half a scale`, async () => {
    const out = join(tempDir(), format);
    const report = await quantize(SOURCE, out, { ...BASE, format, symmetric });
    assert.equal(report.quantized, modules().length);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    // Python's json reads rope_theta back as a float only with a decimal point.
    assert.match(readFileSync(join(out, 'config.json'), 'utf8'), /"rope_theta": 500000\.0,/);
    const tensors = await readAll(out);
    const file = await SafetensorsFile.open(join(out, 'model.safetensors'));
    assert.deepEqual(file.metadata, { format: 'pt' });
    await file.close();
    const source = await Checkpoint.open(SOURCE);
    const ours = await openHfModel(out);
    let lowest = 0;
    let highest = 0;
    let widest = 0; // max |w| / scale: 7.5 on the full signed range, 7 on MatMulNBits' +-7
    try {
      for (const m of modules()) {
        const d = DECODERS[format](config, tensors, m);
        const w = await source.readFloat32(`${m}.weight`);
        const back = await ours.weights.readFloat32(`${m}.weight`);
        for (let k = 0; k < w.length; k++) {
          const tol = 0.5 * d.scaleOf[k]! * (1 + 1e-6) + 1e-9;
          assert.ok(Math.abs(d.weight[k]! - w[k]!) <= tol, `${m}[${k}]: ${d.weight[k]} vs source ${w[k]} (scale ${d.scaleOf[k]})`);
          assert.ok(Math.abs(back[k]! - d.weight[k]!) <= 1e-6 * Math.abs(d.scaleOf[k]!), `${m}[${k}]: llmopt reads ${back[k]}`);
          widest = Math.max(widest, Math.abs(w[k]!) / d.scaleOf[k]!);
        }
        for (const q of d.signedCodes ?? []) [lowest, highest] = [Math.min(lowest, q), Math.max(highest, q)];
      }
    } finally {
      await ours.close();
      await source.close();
    }
    // The symmetric quantizers of these formats use the whole signed range (scale max|w| / 7.5): compressed-tensors'
    // float32 scale puts -max|w| on -8 exactly; the float16 scales of GPTQ and AWQ are rounded up, so just above -8.
    if (symmetric) {
      assert.ok(widest > 7.4 && widest <= 7.5 + 1e-6, `max |w| / scale ${widest}`);
      if (format === 'compressed-tensors') assert.deepEqual([lowest, highest], [-8, 7]);
      if (format === 'gptq') assert.ok(lowest >= -8 && highest === 7, `codes ${lowest}..${highest}`);
    }
    if (format === 'compressed-tensors') assert.ok(config.quantization_config.ignore.includes('lm_head'));
    // The manifest claims only what the format did: embeddings stay float in every engine format.
    const manifest = JSON.parse(readFileSync(join(out, 'llmopt.json'), 'utf8'));
    assert.equal(manifest.passes.at(-1).options.quantizeEmbeddings, false);
    assert.equal(manifest.passes.at(-1).options.format, format);
  });
}

test('an --exclude that splits a fused group keeps the whole group in float, with a warning naming it', async () => {
  const out = join(tempDir(), 'ct');
  const warnings: string[] = [];
  const report = await quantize(SOURCE, out, {
    ...BASE,
    format: 'compressed-tensors',
    exclude: ['*gate_proj'],
    onWarning: (w) => warnings.push(w),
  });
  assert.deepEqual(report.warnings.slice(0, 2), warnings.slice(0, 2));
  assert.match(warnings[0]!, /model\.layers\.0\.mlp\.gate_up_proj fuses gate_proj, up_proj .* should_ignore_layer.*kept all of/);
  const qc = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config;
  // vLLM's should_ignore_layer: every shard of a fused module in ignore, or none.
  for (const l of [0, 1]) {
    assert.ok(qc.ignore.includes(`model.layers.${l}.mlp.gate_proj`) && qc.ignore.includes(`model.layers.${l}.mlp.up_proj`));
    assert.ok(!qc.ignore.includes(`model.layers.${l}.self_attn.q_proj`));
  }
  const tensors = await readAll(out);
  assert.ok(tensors.has('model.layers.0.mlp.up_proj.weight') && !tensors.has('model.layers.0.mlp.up_proj.weight_packed'));
});

test("GPTQ-calibrated layers in --format gptq: the independent reading and llmopt's agree on every weight", async () => {
  const out = join(tempDir(), 'gptq');
  await quantize(SOURCE, out, { ...BASE, format: 'gptq', method: 'gptq', calib: SAMPLE_TEXT, calibSamples: 4, calibSeqLen: 16 });
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  // quantize_config.json carries the same scheme for AutoGPTQ.
  assert.deepEqual(JSON.parse(readFileSync(join(out, 'quantize_config.json'), 'utf8')), config.quantization_config);
  const tensors = await readAll(out);
  const ours = await openHfModel(out);
  try {
    for (const m of modules()) {
      const d = decodeGptq(config, tensors, m);
      const back = await ours.weights.readFloat32(`${m}.weight`);
      for (let k = 0; k < back.length; k++) assert.ok(Math.abs(back[k]! - d.weight[k]!) <= 1e-6 * d.scaleOf[k]!, `${m}[${k}]`);
    }
  } finally {
    await ours.close();
  }
});
