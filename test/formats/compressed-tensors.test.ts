// Tests of the compressed-tensors writer and reader: exact round trips of int4/int8 layers, the packed int32
// bit layout against hand-written words, the quantization_config vLLM reads, and refusal of unsupported schemes.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../src/core/errors.js';
import { fromFloat32, toFloat32 } from '../../src/formats/dtype.js';
import { Checkpoint, SafetensorsFile, writeSafetensors, type TensorEntry } from '../../src/formats/safetensors.js';
import { openCompressedTensors } from '../../src/formats/compressed-tensors-read.js';
import {
  COMPRESSED_TENSORS_VERSION,
  isCompressedTensors,
  packInt32,
  unpackInt32,
  writeCompressedTensorsCheckpoint,
  type CompressedTensorsWriteOptions,
} from '../../src/formats/compressed-tensors.js';
import { quantizeRtn } from '../../src/passes/quantize/blockwise.js';
import { dequantize, type BlockQuantConfig, type BlockQuantized } from '../../src/core/block-quant.js';

let tmp: string;
let counter = 0;
before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'llmopt-ct-'));
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});
const freshDir = () => path.join(tmp, `ckpt-${counter++}`);

// Deterministic pseudo-random weights (a small LCG), so failures reproduce.
function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  let state = seed >>> 0 || 1;
  const m = new Float32Array(rows * cols);
  for (let i = 0; i < m.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    m[i] = (state / 2 ** 32 - 0.5) * 0.2;
  }
  return m;
}

const SOURCE_CONFIG = { model_type: 'llama', hidden_size: 64, torch_dtype: 'float16', architectures: ['LlamaForCausalLM'] };

// Float tensors copied through: an F16 embedding and an F32 norm, with distinctive bytes.
const FLOATS: TensorEntry[] = [
  { name: 'model.embed_tokens.weight', dtype: 'F16', shape: [10, 64] },
  { name: 'model.norm.weight', dtype: 'F32', shape: [64] },
  { name: 'lm_head.weight', dtype: 'F16', shape: [10, 64] },
];
const floatBytes = (name: string) => {
  const entry = FLOATS.find((f) => f.name === name)!;
  const count = entry.shape.reduce((a, b) => a * b, 1);
  return fromFloat32(randomMatrix(1, count, name.length * 7 + 3), entry.dtype as 'F16' | 'F32');
};

function options(layers: Map<string, BlockQuantized>, extra: Partial<CompressedTensorsWriteOptions> = {}): CompressedTensorsWriteOptions {
  return {
    sourceConfig: SOURCE_CONFIG,
    layers,
    scaleDtype: 'F32',
    floatTensors: FLOATS,
    readFloat: async (name) => floatBytes(name),
    ignore: ['lm_head'],
    ...extra,
  };
}

// Rows not a multiple of 8 exercise the zero-point padding; 96 and 64 columns split evenly into groups of 32.
function makeLayers(cfg: BlockQuantConfig): Map<string, BlockQuantized> {
  const shapes: Array<[string, number, number]> = [
    ['model.layers.0.self_attn.q_proj', 64, 64],
    ['model.layers.0.mlp.down_proj', 13, 96],
    ['model.layers.0.mlp.up_proj', 40, 64],
  ];
  return new Map(shapes.map(([name, rows, cols], i) => [name, quantizeRtn(randomMatrix(rows, cols, 11 + i), rows, cols, cfg)]));
}

async function rejectsInput(run: () => Promise<unknown>, ...fragments: string[]): Promise<void> {
  await assert.rejects(run, (error: unknown) => {
    assert.ok(error instanceof InputError, `expected InputError, got ${String(error)}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
    return true;
  });
}

for (const cfg of [
  { bits: 4, blockSize: 32, symmetric: true },
  { bits: 4, blockSize: 32, symmetric: false },
  { bits: 8, blockSize: 32, symmetric: true },
] as BlockQuantConfig[]) {
  const label = `${cfg.bits}-bit ${cfg.symmetric ? 'symmetric' : 'asymmetric'}`;
  test(`${label} layers round trip: codes, zero points and dequantized weights are exact`, async () => {
    const layers = makeLayers(cfg);
    const dir = freshDir();
    await writeCompressedTensorsCheckpoint(dir, options(layers));
    const source = await openCompressedTensors(dir);
    try {
      assert.deepEqual(new Set(source.quantizedModules), new Set(layers.keys()));
      for (const [module, original] of layers) {
        const back = await source.readQuantized(module);
        assert.deepEqual(back.codes, original.codes, `${module} codes`);
        assert.deepEqual(back.zeroPoints, original.zeroPoints, `${module} zero points`);
        assert.deepEqual(back.scales, original.scales, `${module} scales`);
        assert.equal(back.blockSize, cfg.blockSize);
        assert.ok(source.has(`${module}.weight`));
        assert.deepEqual(source.shape(`${module}.weight`), [original.rows, original.cols]);
        assert.deepEqual(await source.readFloat32(`${module}.weight`), dequantize(original), `${module} dequantized`);
      }
      for (const f of FLOATS) {
        assert.deepEqual(source.shape(f.name), f.shape);
        assert.deepEqual(await source.readFloat32(f.name), toFloat32(floatBytes(f.name), f.dtype));
      }
      // Compression parameters are hidden; each quantized module shows up as its float weight.
      const names = source.names();
      assert.ok(!names.some((n) => /weight_(packed|scale|shape|zero_point)$/.test(n)), names.join(', '));
      assert.equal(names.length, layers.size + FLOATS.length);
    } finally {
      await source.close();
    }
    // The stored tensors have the dtypes and shapes vLLM allocates.
    const ckpt = await Checkpoint.open(dir);
    try {
      for (const [module, q] of layers) {
        assert.deepEqual(ckpt.info(`${module}.weight_packed`).shape, [q.rows, q.cols / (32 / cfg.bits)]);
        assert.equal(ckpt.info(`${module}.weight_packed`).dtype, 'I32');
        assert.deepEqual(ckpt.info(`${module}.weight_scale`).shape, [q.rows, q.cols / cfg.blockSize]);
        assert.equal(ckpt.info(`${module}.weight_shape`).dtype, 'I64');
        assert.equal(ckpt.has(`${module}.weight_zero_point`), !cfg.symmetric);
        if (!cfg.symmetric)
          assert.deepEqual(ckpt.info(`${module}.weight_zero_point`).shape, [Math.ceil(q.rows / 8), q.cols / cfg.blockSize]);
        assert.ok(!ckpt.has(`${module}.weight`));
      }
    } finally {
      await ckpt.close();
    }
  });
}

test('config.json keeps the source fields and gains the quantization_config vLLM reads', async () => {
  const dir = freshDir();
  await writeCompressedTensorsCheckpoint(dir, options(makeLayers({ bits: 4, blockSize: 32, symmetric: false })));
  const config = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8'));
  assert.equal(config.model_type, 'llama');
  assert.equal(config.torch_dtype, 'float16');
  assert.ok(isCompressedTensors(config));
  const qc = config.quantization_config;
  assert.equal(qc.quant_method, 'compressed-tensors');
  assert.equal(qc.format, 'pack-quantized');
  assert.equal(qc.quantization_status, 'compressed');
  assert.deepEqual(qc.ignore, ['lm_head']);
  assert.equal(qc.kv_cache_scheme, null);
  assert.equal(qc.version, COMPRESSED_TENSORS_VERSION);
  assert.deepEqual(qc.sparsity_config, {});
  assert.deepEqual(qc.transform_config, {});
  assert.deepEqual(Object.keys(qc.config_groups), ['group_0']);
  const group = qc.config_groups.group_0;
  assert.deepEqual(group.targets, ['Linear']);
  assert.equal(group.format, 'pack-quantized');
  assert.equal(group.input_activations, null);
  assert.equal(group.output_activations, null);
  assert.deepEqual(
    { ...group.weights },
    {
      num_bits: 4,
      type: 'int',
      symmetric: false,
      strategy: 'group',
      group_size: 32,
      block_structure: null,
      dynamic: false,
      actorder: null,
      observer: 'minmax',
      observer_kwargs: {},
    },
  );
  assert.ok(!isCompressedTensors(SOURCE_CONFIG));
});

test('packed int32 words match compressed-tensors pack_to_int32 on hand-made codes', async () => {
  // Row 0 holds codes 0..15, row 1 codes 15..0: value i of a word sits at bits [4i, 4i+4), lowest first.
  const codes = new Uint8Array(32);
  for (let c = 0; c < 16; c++) [codes[c], codes[16 + c]] = [c, 15 - c];
  const int4: BlockQuantized = {
    bits: 4,
    blockSize: 16,
    symmetric: false,
    rows: 2,
    cols: 16,
    blocksPerRow: 1,
    codes,
    scales: new Float32Array([0.5, 0.25]),
    zeroPoints: new Uint8Array([3, 12]),
  };
  // 9 rows of zero points force padding of the second word along dim 0.
  const zp = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const tall: BlockQuantized = { ...int4, rows: 9, codes: new Uint8Array(9 * 16), scales: new Float32Array(9).fill(1), zeroPoints: zp };
  const dir = freshDir();
  await writeCompressedTensorsCheckpoint(dir, {
    ...options(
      new Map([
        ['a', int4],
        ['b', tall],
      ]),
    ),
    floatTensors: [],
    ignore: [],
  });
  const file = await SafetensorsFile.open(path.join(dir, 'model.safetensors'));
  try {
    const words = async (name: string) => {
      const raw = await file.readRaw(name);
      const view = new DataView(raw.buffer);
      return Array.from({ length: raw.byteLength / 4 }, (_, i) => view.getInt32(i * 4, true));
    };
    assert.deepEqual(await words('a.weight_packed'), [0x76543210, 0xfedcba98 | 0, 0x89abcdef | 0, 0x01234567]);
    // Zero points pack along out_features: column 0 of words [0] and [1] holds rows 0..7 and row 8.
    assert.deepEqual(await words('b.weight_zero_point'), [0x87654321 | 0, 0x00000009]);
    assert.deepEqual(await words('a.weight_zero_point'), [0x0000c3]);
    const shape = new DataView((await file.readRaw('a.weight_shape')).buffer);
    assert.deepEqual([shape.getBigInt64(0, true), shape.getBigInt64(8, true)], [2n, 16n]);
  } finally {
    await file.close();
  }
  // 8-bit codes: four bytes per word, lowest first, each the signed value plus 128.
  const int8 = packInt32(new Uint8Array([1, 2, 3, 4, 128, 129, 255, 0]), 1, 8, 8, 1);
  const view = new DataView(int8.buffer);
  assert.deepEqual([view.getInt32(0, true), view.getInt32(4, true)], [0x04030201, 0x00ff8180]);
  assert.deepEqual(unpackInt32(int8, 1, 8, 8, 1), new Uint8Array([1, 2, 3, 4, 128, 129, 255, 0]));
});

test('scales stored as F16 dequantize exactly when the quantizer used F16-representable scales', async () => {
  const layers = makeLayers({ bits: 4, blockSize: 32, symmetric: true });
  for (const q of layers.values()) q.scales = toFloat32(fromFloat32(q.scales, 'F16'), 'F16');
  const dir = freshDir();
  await writeCompressedTensorsCheckpoint(dir, options(layers, { scaleDtype: 'F16', maxShardBytes: 4000 }));
  const files = await fs.readdir(dir);
  assert.ok(files.includes('model.safetensors.index.json'), `sharded: ${files.join(', ')}`);
  const source = await openCompressedTensors(dir);
  try {
    for (const [module, q] of layers) assert.deepEqual(await source.readFloat32(`${module}.weight`), dequantize(q));
  } finally {
    await source.close();
  }
});

test('the writer refuses layouts vLLM cannot load, naming the tensor and the fix', async () => {
  const ragged = quantizeRtn(randomMatrix(8, 72, 5), 8, 72, { bits: 4, blockSize: 32, symmetric: true });
  await rejectsInput(
    () => writeCompressedTensorsCheckpoint(freshDir(), options(new Map([['m.ragged', ragged]]))),
    'm.ragged.weight',
    '72',
    'block size 32',
  );
  const asym8 = quantizeRtn(randomMatrix(8, 64, 5), 8, 64, { bits: 8, blockSize: 32, symmetric: false });
  await rejectsInput(() => writeCompressedTensorsCheckpoint(freshDir(), options(new Map([['m.a', asym8]]))), 'asymmetric 8-bit');
  const g32 = quantizeRtn(randomMatrix(8, 64, 5), 8, 64, { bits: 4, blockSize: 32, symmetric: true });
  const mixed = new Map([
    ['m.x', g32],
    ['m.y', quantizeRtn(randomMatrix(8, 64, 6), 8, 64, { bits: 8, blockSize: 32, symmetric: true })],
    ['m.z', asym8],
  ]);
  // Layers of several schemes are written as several groups, but asymmetric int8 is refused among them too.
  await rejectsInput(() => writeCompressedTensorsCheckpoint(freshDir(), options(mixed)), '"m.z"', 'asymmetric 8-bit');
  await rejectsInput(() => writeCompressedTensorsCheckpoint(freshDir(), options(new Map([['lm_head', g32]]))), 'ignore');
  await rejectsInput(
    () => writeCompressedTensorsCheckpoint(freshDir(), options(new Map([['model.norm', g32]]), { floatTensors: FLOATS })),
    'model.norm.weight',
    'twice',
  );
  await rejectsInput(() => writeCompressedTensorsCheckpoint(freshDir(), options(new Map())), 'no quantized layers');
});

test('layers of several schemes: one config group each, targeting its modules by name, read back exactly', async () => {
  const layers = new Map([
    ['model.layers.0.self_attn.q_proj', quantizeRtn(randomMatrix(16, 64, 1), 16, 64, { bits: 4, blockSize: 32, symmetric: false })],
    ['model.layers.0.self_attn.k_proj', quantizeRtn(randomMatrix(16, 64, 2), 16, 64, { bits: 8, blockSize: 32, symmetric: true })],
    ['model.layers.0.mlp.up_proj', quantizeRtn(randomMatrix(8, 64, 3), 8, 64, { bits: 4, blockSize: 64, symmetric: false })],
    ['model.layers.0.mlp.down_proj', quantizeRtn(randomMatrix(8, 64, 4), 8, 64, { bits: 4, blockSize: 32, symmetric: false })],
  ]);
  const dir = freshDir();
  await writeCompressedTensorsCheckpoint(dir, options(layers));
  const qc = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8')).quantization_config;
  const groups = Object.entries<any>(qc.config_groups).map(([name, g]) => [
    name,
    g.weights.num_bits,
    g.weights.symmetric,
    g.weights.group_size,
    g.targets,
  ]);
  assert.deepEqual(groups, [
    ['group_0', 4, false, 32, ['model.layers.0.self_attn.q_proj', 'model.layers.0.mlp.down_proj']],
    ['group_1', 8, true, 32, ['model.layers.0.self_attn.k_proj']],
    ['group_2', 4, false, 64, ['model.layers.0.mlp.up_proj']],
  ]);
  const source = await openCompressedTensors(dir);
  try {
    for (const [module, q] of layers) {
      const back = await source.readQuantized(module);
      assert.deepEqual([back.bits, back.symmetric, back.blockSize], [q.bits, q.symmetric, q.blockSize], module);
      assert.deepEqual(await source.readFloat32(`${module}.weight`), dequantize(q), module);
    }
  } finally {
    await source.close();
  }
});

// A checkpoint whose config.json is replaced after writing, to test the reader's refusals.
async function withQuantizationConfig(edit: (qc: Record<string, any>) => void): Promise<string> {
  const dir = freshDir();
  await writeCompressedTensorsCheckpoint(dir, options(makeLayers({ bits: 4, blockSize: 32, symmetric: true })));
  const configPath = path.join(dir, 'config.json');
  const config = JSON.parse(await fs.readFile(configPath, 'utf8'));
  edit(config.quantization_config);
  await fs.writeFile(configPath, JSON.stringify(config));
  return dir;
}

test('the reader refuses activation quantization, float types, sparse formats and unmatched tensors', async () => {
  const cases: Array<[(qc: Record<string, any>) => void, string]> = [
    [
      (qc) => (qc.config_groups.group_0.input_activations = { num_bits: 8, type: 'int', strategy: 'token', dynamic: true }),
      'activation quantization',
    ],
    [(qc) => (qc.config_groups.group_0.weights.type = 'float'), 'weight type "float"'],
    [(qc) => (qc.config_groups.group_0.format = 'marlin-24'), 'format "marlin-24"'],
    [
      (qc) => {
        delete qc.config_groups.group_0.format;
        qc.format = 'marlin-24';
      },
      'format "marlin-24"',
    ],
    [(qc) => (qc.sparsity_config = { format: 'sparse-24-bitmask', sparsity_structure: '2:4' }), 'sparsity format'],
    [(qc) => (qc.kv_cache_scheme = { num_bits: 8, type: 'float' }), 'kv_cache_scheme'],
    [(qc) => (qc.config_groups.group_0.weights.strategy = 'tensor'), 'strategy "tensor"'],
    [(qc) => (qc.config_groups.group_0.weights.actorder = 'group'), 'actorder'],
    [(qc) => (qc.config_groups.group_0.weights.group_size = 64), 'fits none of the weight schemes'],
  ];
  for (const [edit, fragment] of cases) {
    const dir = await withQuantizationConfig(edit);
    await rejectsInput(() => openCompressedTensors(dir), fragment);
  }
  const notOurs = await withQuantizationConfig((qc) => (qc.quant_method = 'gptq'));
  await rejectsInput(() => openCompressedTensors(notOurs), 'compressed-tensors');
});

test('the reader takes unpacked int-quantized weights with signed int8 codes and zero points', async () => {
  const q = quantizeRtn(randomMatrix(4, 16, 9), 4, 16, { bits: 8, blockSize: 8, symmetric: false });
  const signed = (u: Uint8Array) => new Uint8Array(Int8Array.from(u, (v) => v - 128).buffer);
  const dir = freshDir();
  await fs.mkdir(dir, { recursive: true });
  const tensors = new Map<string, Uint8Array>([
    ['m.weight', signed(q.codes)],
    ['m.weight_scale', fromFloat32(q.scales, 'F32')],
    ['m.weight_zero_point', signed(q.zeroPoints!)],
  ]);
  const entries: TensorEntry[] = [
    { name: 'm.weight', dtype: 'I8', shape: [4, 16] },
    { name: 'm.weight_scale', dtype: 'F32', shape: [4, 2] },
    { name: 'm.weight_zero_point', dtype: 'I8', shape: [4, 2] },
  ];
  await writeSafetensors(path.join(dir, 'model.safetensors'), entries, (name) => tensors.get(name)!);
  const weights = { num_bits: 8, type: 'int', symmetric: false, strategy: 'group', group_size: 8 };
  const quantization_config = {
    quant_method: 'compressed-tensors',
    format: 'int-quantized',
    quantization_status: 'compressed',
    config_groups: { g: { targets: ['Linear'], weights } },
  };
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({ ...SOURCE_CONFIG, quantization_config }));
  const source = await openCompressedTensors(dir);
  try {
    assert.deepEqual(source.names(), ['m.weight']);
    assert.deepEqual(await source.readFloat32('m.weight'), dequantize(q));
  } finally {
    await source.close();
  }
});
