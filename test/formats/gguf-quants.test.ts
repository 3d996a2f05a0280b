// ggml's tensor types as llmopt writes them, checked byte for byte against llama.cpp's llama-quantize
// (with and without an importance matrix) on a synthetic model whose rows fit every block and on the
// tiny checkpoints (whose rows force llama.cpp's fallbacks), and the mix table against llama.cpp's choices.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { type GgufFile, type GgufValue, readGgufHeader, readGgufTensor, writeGguf } from '../../src/formats/gguf/file.js';
import { GGML_TYPES, type GgmlType } from '../../src/formats/gguf/ggml-types.js';
import { fp16ToFp32, fp32ToBf16, fp32ToFp16 } from '../../src/formats/gguf/quants/float.js';
import { readImatrix } from '../../src/formats/gguf/quants/imatrix.js';
import { dequantizeRows, quantizeRows } from '../../src/formats/gguf/quants/index.js';
import { type GgufTarget, ggufFileType, ggufMix, ggufTensorDecision } from '../../src/formats/gguf/mix.js';
import { seededRandom } from '../../src/runtime/sampling.js';
import { DREAMS_TRAIN, SHARED, sharedModel, tempDir } from '../support.js';
import { normal } from '../passes/correlated-layer.js';

const LLAMA_BIN = join(SHARED, 'tools', 'llama.cpp', 'bin');
const NEEDS_LLAMA = !existsSync(join(LLAMA_BIN, 'llama-quantize'))
  ? `${LLAMA_BIN} is absent: llama.cpp comparisons skipped`
  : !existsSync(join(sharedModel('qwen3-tiny'), 'qwen3-tiny-f32.gguf'))
    ? '../shared/models/qwen3-tiny is absent: llama.cpp comparisons skipped'
    : undefined;
const ALL_TYPES = Object.keys(GGML_TYPES) as GgmlType[];

test('fp16 and bf16 conversions round to nearest even, as ggml', () => {
  assert.equal(fp32ToFp16(1), 0x3c00);
  assert.equal(fp32ToFp16(-2), 0xc000);
  assert.equal(fp32ToFp16(65504), 0x7bff);
  assert.equal(fp32ToFp16(65520), 0x7c00, 'halfway past the largest half rounds to infinity');
  assert.equal(fp32ToFp16(2 ** -24), 0x0001, 'smallest subnormal');
  assert.equal(fp32ToFp16(2 ** -25), 0x0000, 'halfway to the smallest subnormal rounds to even (zero)');
  assert.equal(fp32ToFp16(1 + 2 ** -11), 0x3c00, 'tie to even');
  assert.equal(fp32ToFp16(1 + 3 * 2 ** -11), 0x3c02, 'tie to even (up)');
  assert.equal(fp32ToFp16(Number.NaN), 0x7e00);
  assert.equal(fp16ToFp32(0x3555), Math.fround(0.333251953125));
  assert.equal(fp32ToBf16(1 + 2 ** -8), 0x3f80, 'bf16 tie to even');
  assert.equal(fp32ToBf16(Number.NaN) & 0x7fc0, 0x7fc0);
});

/** Seeded rows with the edge cases of block scale searches: zero, constant, one-sided, outlier, tiny blocks. */
function testMatrix(seed: number, rows: number, cols: number): Float32Array {
  const g = normal(seededRandom(seed));
  const colScale = Float32Array.from({ length: cols }, () => Math.exp(0.5 * g()));
  const w = Float32Array.from({ length: rows * cols }, (_, i) => 0.02 * g() * colScale[i % cols]!);
  const block = (r: number, b: number, f: (j: number) => number) => {
    for (let j = 0; j < 32 && b * 32 + j < cols; j++) w[r * cols + b * 32 + j] = f(j);
  };
  if (rows > 6 && cols >= 256) {
    block(0, 0, () => 0);
    block(0, 1, () => 0.0123);
    block(1, 2, (j) => 0.001 + 0.0001 * j);
    block(1, 3, (j) => -0.002 * (j + 1));
    block(2, 4, (j) => (j === 7 ? 0.9 : 0.01 * g()));
    block(3, 5, () => 1e-7 * g());
    for (let j = 0; j < 256; j++) w[4 * cols + j] = 0; // an all-zero super-block
    block(5, 0, (j) => (j % 2 ? 0.05 : -0.05));
  }
  return w;
}

test('dequantize(quantize(x)) stays within each type’s error bound', () => {
  const rows = 8;
  const cols = 512;
  const x = testMatrix(7, rows, cols);
  // Bound on the error relative to each row's largest magnitude, per type (RTN on the stored grid).
  const bound: Record<GgmlType, number> = {
    F32: 0,
    F16: 2 ** -11,
    BF16: 2 ** -8,
    Q8_0: 1 / 127,
    Q4_0: 1 / 8,
    Q4_1: 1 / 15,
    Q5_0: 1 / 16,
    Q5_1: 1 / 31,
    Q4_K: 1 / 8,
    Q5_K: 1 / 16,
    Q6_K: 1 / 32,
  };
  for (const type of ALL_TYPES) {
    const q = quantizeRows(type, x, rows, cols);
    assert.equal(q.length, (rows * cols * GGML_TYPES[type].blockBytes) / GGML_TYPES[type].blockSize, type);
    const y = dequantizeRows(type, q, rows, cols);
    let sq = 0;
    for (let r = 0; r < rows; r++) {
      let amax = 0;
      for (let c = 0; c < cols; c++) amax = Math.max(amax, Math.abs(x[r * cols + c]!));
      for (let c = 0; c < cols; c++) {
        const e = Math.abs(y[r * cols + c]! - x[r * cols + c]!);
        sq += e * e;
        assert.ok(e <= bound[type] * amax * 1.01 + 1e-9, `${type} row ${r} col ${c}: |error| ${e} over ${bound[type]} of ${amax}`);
      }
    }
    if (type === 'F32') assert.equal(sq, 0);
  }
  assert.throws(() => quantizeRows('Q4_K', x.subarray(0, 160), 1, 160), /160 columns is not a multiple of its 256-element block/);
  assert.throws(() => quantizeRows('Q4_0', x, rows, cols, { importance: new Float32Array(3) }), /importance has 3 values/);
  const bad = x.slice(0, 256);
  bad[37] = Number.NaN;
  assert.throws(() => quantizeRows('Q8_0', bad, 1, 256), /Q8_0: value NaN at row 0, column 37/);
});

// ---------------------------------------------------------------------------------------------------
// Against llama.cpp

const cache = new Map<string, string>();
let workDir: string | undefined;
const work = () => {
  workDir ??= tempDir('llmopt-ggufq-');
  return workDir;
};

function run(tool: string, args: string[]): void {
  const r = spawnSync(join(LLAMA_BIN, tool), args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed (${r.status}):\n${(r.stderr + r.stdout).slice(-2000)}`);
}

/** llama-quantize IN -> OUT as TYPE (cached per test run), with an optional imatrix. */
function llamaQuantize(input: string, type: string, extra: { imatrix?: string; pure?: boolean; requantize?: boolean } = {}): string {
  const key = `${input}|${type}|${extra.imatrix ?? ''}|${extra.pure ?? false}`;
  if (!cache.has(key)) {
    const out = join(work(), `q${cache.size}-${type}.gguf`);
    const flags = [
      ...(extra.imatrix ? ['--imatrix', extra.imatrix] : []),
      ...(extra.pure ? ['--pure'] : []),
      ...(extra.requantize ? ['--allow-requantize'] : []),
    ];
    run('llama-quantize', [...flags, input, out, type, '2']);
    cache.set(key, out);
  }
  return cache.get(key)!;
}

const N_LAYERS = 8;
/** Per layer: [name, rows, cols] (rows = GGUF ne[1], cols = ne[0]), every row a multiple of 256. */
const SYNTH_LAYER: Array<[string, number, number]> = [
  ['attn_q.weight', 8, 256],
  ['attn_k.weight', 8, 256],
  ['attn_v.weight', 8, 256],
  ['attn_output.weight', 8, 512],
  ['ffn_gate.weight', 8, 256],
  ['ffn_up.weight', 8, 256],
  ['ffn_down.weight', 8, 512],
  ['attn_norm.weight', 1, 256],
];

/**
 * A qwen3 GGUF (qwen3-tiny's metadata, 8 layers) whose matrices fit every block size: llama-quantize reads
 * hyperparameters only, so it quantizes whatever shapes the tensors have. Data from {@link testMatrix}.
 */
async function synthModel(): Promise<{ path: string; data: Map<string, Float32Array> }> {
  const path = join(work(), 'synth-f32.gguf');
  const base = readGgufHeader(join(sharedModel('qwen3-tiny'), 'qwen3-tiny-f32.gguf'));
  const meta: Array<[string, GgufValue]> = [...base.metadata].map(([k, v]) =>
    k === 'qwen3.block_count' ? [k, { type: 'u32', value: N_LAYERS }] : [k, v],
  );
  const shapes: Array<[string, number, number]> = [
    ['token_embd.weight', 64, 256],
    ['output.weight', 64, 256],
    ['output_norm.weight', 1, 256],
  ];
  for (let l = 0; l < N_LAYERS; l++) for (const [n, r, c] of SYNTH_LAYER) shapes.push([`blk.${l}.${n}`, r, c]);
  const data = new Map<string, Float32Array>();
  shapes.forEach(([name, rows, cols], i) => data.set(name, testMatrix(100 + i, rows, cols)));
  await writeGguf(
    path,
    meta,
    shapes.map(([name, rows, cols]) => ({
      name,
      shape: rows === 1 ? [cols] : [rows, cols],
      type: 'F32' as const,
      data: () => new Uint8Array(data.get(name)!.buffer),
    })),
  );
  return { path, data };
}

/** An imatrix GGUF for the synthetic model (seeded positive importances with a wide range), as llama-imatrix lays it out. */
async function synthImatrix(shapes: Map<string, Float32Array>, file: GgufFile): Promise<string> {
  const path = join(work(), 'synth-imatrix.gguf');
  const rand = seededRandom(99);
  const tensors: Array<{ name: string; shape: number[]; type: 'F32'; data: () => Uint8Array }> = [];
  for (const t of file.tensors) {
    if (t.shape.length < 2 || !t.name.startsWith('blk.')) continue;
    const cols = t.shape.at(-1)!;
    const sums = Float32Array.from({ length: cols }, () => 1000 * Math.exp(3 * (rand() - 0.5)));
    tensors.push({ name: `${t.name}.in_sum2`, shape: [1, cols], type: 'F32', data: () => new Uint8Array(sums.buffer) });
    tensors.push({ name: `${t.name}.counts`, shape: [1, 1], type: 'F32', data: () => new Uint8Array(new Float32Array([700]).buffer) });
  }
  void shapes;
  await writeGguf(
    path,
    [
      ['general.type', { type: 'string', value: 'imatrix' }],
      ['imatrix.datasets', { type: 'array', itemType: 'string', value: ['synthetic'] }],
      ['imatrix.chunk_count', { type: 'u32', value: 1 }],
      ['imatrix.chunk_size', { type: 'u32', value: 512 }],
    ],
    tensors,
  );
  return path;
}

/**
 * Compares every tensor of llama.cpp's quantized file with llmopt's: the ggml type chosen by the mix
 * table and the bytes of quantizeRows on the same float32 data (with the same importance, when given).
 */
async function compareFile(
  target: GgufTarget,
  source: GgufFile,
  theirs: GgufFile,
  importance?: Map<string, Float32Array>,
): Promise<{ tensors: number; bytes: number }> {
  const nLayers = Number(source.metadata.get(`${source.metadata.get('general.architecture')!.value}.block_count`)!.value);
  const arch = String(source.metadata.get('general.architecture')!.value);
  const shapes = source.tensors.map((t) => {
    const layer = /^blk\.(\d+)\./.exec(t.name);
    const rows = t.shape.length > 1 ? t.shape.slice(0, -1).reduce((a, b) => a * b, 1) : 1;
    return { name: t.name, layer: layer ? Number(layer[1]) : null, nLayers, rows, cols: t.shape.at(-1)!, arch };
  });
  const decisions = ggufMix(target, shapes, { importance: importance !== undefined });
  assert.equal(Number(theirs.metadata.get('general.file_type')?.value), ggufFileType(target), `${target}: general.file_type`);
  let bytes = 0;
  for (const [i, t] of source.tensors.entries()) {
    const q = theirs.tensors.find((u) => u.name === t.name);
    assert.ok(q, `${t.name} in llama.cpp's file`);
    const { rows, cols } = shapes[i]!;
    const decision = decisions[i]!;
    assert.equal(decision.type, q.type, `${target} ${t.name}: llama.cpp chose ${q.type}, llmopt ${decision.type} (${decision.reason})`);
    const x = new Float32Array((await readGgufTensor(source, t)).slice().buffer);
    const imp = importance?.get(t.name);
    const mine = quantizeRows(decision.type, x, rows, cols, { importance: imp });
    const ref = await readGgufTensor(theirs, q);
    if (!Buffer.from(mine).equals(Buffer.from(ref))) {
      let at = 0;
      while (mine[at] === ref[at]) at++;
      const block = Math.floor(at / GGML_TYPES[q.type].blockBytes);
      assert.fail(
        `${target} ${t.name} (${q.type}${imp ? ', importance' : ''}): first differing byte ${at} (block ${block}) of ${ref.length}`,
      );
    }
    bytes += ref.length;
  }
  return { tensors: source.tensors.length, bytes };
}

/**
 * llama.cpp's own dequantization of a quantized file (llama-quantize --allow-requantize to F32 runs each
 * type's to_float, ggml's dequantize_row_*) against dequantizeRows, bit for bit.
 */
async function compareDequantized(quantized: string): Promise<void> {
  const q = readGgufHeader(quantized);
  const f = readGgufHeader(llamaQuantize(quantized, 'F32', { requantize: true }));
  for (const t of q.tensors) {
    if (t.type === 'F32') continue;
    const cols = t.shape.at(-1)!;
    const rows = t.shape.slice(0, -1).reduce((a, b) => a * b, 1);
    const mine = dequantizeRows(t.type, await readGgufTensor(q, t), rows, cols);
    const theirs = await readGgufTensor(f, f.tensors.find((u) => u.name === t.name)!);
    assert.ok(Buffer.from(mine.buffer).equals(Buffer.from(theirs)), `${t.name} (${t.type}): dequantized values differ from llama.cpp's`);
  }
}

const SYNTH_TARGETS: Array<[GgufTarget, string, boolean]> = [
  ['q8_0', 'Q8_0', false],
  ['q4_0', 'Q4_0', false],
  ['q4_1', 'Q4_1', false],
  ['q5_0', 'Q5_0', false],
  ['q5_1', 'Q5_1', false],
  ['q4_k_m', 'Q4_K_M', false],
  ['q5_k_m', 'Q5_K_M', false],
  ['q6_k', 'Q6_K', false],
  ['q4_k', 'Q4_K_M', true],
  ['q5_k', 'Q5_K_M', true],
  ['f16', 'F16', false],
  ['bf16', 'BF16', false],
];

test('every type byte-identical to llama-quantize on a model whose rows fit every block', { skip: NEEDS_LLAMA }, async () => {
  const synth = await synthModel();
  const source = readGgufHeader(synth.path);
  for (const [target, type, pure] of SYNTH_TARGETS) {
    const path = llamaQuantize(synth.path, type, { pure });
    await compareFile(target, source, readGgufHeader(path));
    await compareDequantized(path);
  }
});

test('with an importance matrix: byte-identical to llama-quantize --imatrix', { skip: NEEDS_LLAMA }, async () => {
  const synth = await synthModel();
  const source = readGgufHeader(synth.path);
  const imatrixPath = await synthImatrix(synth.data, source);
  const importance = await readImatrix(imatrixPath);
  // The types that take importance: Q4_0/Q5_0 (make_qx_quants), Q4_1/Q5_1 (make_qkx3_quants), and in the
  // K-quant mixes Q4_K/Q5_K (make_qkx3 + make_qp_quants) and Q6_K (attn_v, ffn_down, output).
  for (const [target, type, pure] of SYNTH_TARGETS.filter(([t]) => ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k_m', 'q5_k_m'].includes(t))) {
    const theirs = readGgufHeader(llamaQuantize(synth.path, type, { imatrix: imatrixPath, pure }));
    await compareFile(target, source, theirs, importance);
  }
});

const TINY = ['qwen2-tiny', 'qwen3-tiny', 'gemma3-tiny', 'phi3-tiny', 'smollm3-tiny'];
const tinyF32 = (name: string) => join(sharedModel(name), `${name}-f32.gguf`);

test('the tiny checkpoints: llama.cpp’s fallbacks and bytes, K-quant mixes', { skip: NEEDS_LLAMA }, async () => {
  for (const name of TINY) {
    if (!existsSync(tinyF32(name))) continue;
    const source = readGgufHeader(tinyF32(name));
    for (const [target, type] of [
      ['q4_k_m', 'Q4_K_M'],
      ['q5_k_m', 'Q5_K_M'],
      ['q6_k', 'Q6_K'],
    ] as Array<[GgufTarget, string]>) {
      await compareFile(target, source, readGgufHeader(llamaQuantize(tinyF32(name), type)));
    }
  }
});

test('a row that fits no block and has no fallback: llama.cpp refuses, and so does the mix table', { skip: NEEDS_LLAMA }, () => {
  const path = tinyF32('qwen3-tiny');
  const r = spawnSync(join(LLAMA_BIN, 'llama-quantize'), [path, join(work(), 'refused.gguf'), 'Q4_0', '1'], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stdout + r.stderr, /no tensor type fallback is defined for type q4_0/);
  assert.throws(
    () => ggufTensorDecision('q4_0', { name: 'blk.0.ffn_down.weight', layer: 0, nLayers: 2, rows: 64, cols: 176, arch: 'qwen3' }),
    /tensor blk\.0\.ffn_down\.weight: 176 columns is not a multiple of 32 \(Q4_0\) — llama.cpp has no fallback for Q4_0/,
  );
});

test('llama-imatrix’s own importance matrix on a tiny checkpoint: byte-identical with --imatrix', { skip: NEEDS_LLAMA }, async () => {
  const path = tinyF32('qwen3-tiny');
  const imatrixPath = join(work(), 'qwen3-imatrix.gguf');
  run('llama-imatrix', ['-m', path, '-f', DREAMS_TRAIN, '-o', imatrixPath, '-t', '2', '--chunks', '8', '-c', '128']);
  const importance = await readImatrix(imatrixPath);
  assert.ok(importance.has('blk.0.attn_q.weight'));
  const source = readGgufHeader(path);
  for (const [target, type] of [
    ['q4_k_m', 'Q4_K_M'],
    ['q5_k_m', 'Q5_K_M'],
  ] as Array<[GgufTarget, string]>) {
    await compareFile(target, source, readGgufHeader(llamaQuantize(path, type, { imatrix: imatrixPath })), importance);
  }
});

test('the mix table’s options and reasons', () => {
  const t = (name: string, cols: number, layer: number | null = null) => ({ name, layer, nLayers: 16, rows: 64, cols, arch: 'llama' });
  const d = (target: GgufTarget, name: string, cols: number, layer: number | null = null, o = {}) =>
    ggufTensorDecision(target, t(name, cols, layer), o);
  assert.equal(d('q4_k_m', 'output.weight', 4096).type, 'Q6_K');
  assert.equal(d('q4_k_m', 'output.weight', 4096, null, { quantizeEmbeddings: true }).type, 'Q4_K');
  assert.equal(d('q4_k_m', 'token_embd.weight', 4096).type, 'Q4_K', 'an untied embedding takes the default type');
  assert.equal(d('q4_k_m', 'token_embd.weight', 4096, null, { hasOutput: false }).type, 'Q6_K', 'a tied embedding is the output');
  assert.equal(d('q8_0', 'output.weight', 4096).type, 'Q8_0');
  assert.equal(d('q4_0', 'output.weight', 4096).type, 'Q6_K');
  assert.equal(d('q4_k', 'output.weight', 4096).type, 'Q4_K', 'q4_k is --pure');
  assert.equal(d('f16', 'blk.0.attn_q.weight', 100).type, 'F16', 'float targets take any row');
  assert.equal(d('q4_k_m', 'blk.0.attn_norm.weight', 4096).type, 'F32');
  assert.equal(d('q4_k_m', 'blk.0.attn_q.bias', 4096).type, 'F32');
  // use_more_bits over 16 layers: 0, 1, 4, 7, 10, 13, 14, 15.
  const more = Array.from({ length: 16 }, (_, l) => d('q4_k_m', `blk.${l}.ffn_down.weight`, 4096, l).type === 'Q6_K');
  assert.deepEqual(
    more.flatMap((m, l) => (m ? [l] : [])),
    [0, 1, 4, 7, 10, 13, 14, 15],
  );
  assert.equal(d('q4_k_m', 'blk.3.attn_qkv.weight', 4096, 3).type, 'Q4_K', 'a fused qkv counts as attn_v');
  assert.equal(d('q5_k_m', 'blk.4.attn_qkv.weight', 4096, 4).type, 'Q6_K');
  assert.equal(d('q4_0', 'blk.0.ffn_down.weight', 4096, 0, { importance: true }).type, 'Q4_1');
  assert.equal(d('q4_0', 'blk.2.ffn_down.weight', 4096, 2, { importance: true }).type, 'Q4_0');
  const fb = d('q4_k_m', 'blk.2.attn_q.weight', 4160, 2);
  assert.equal(fb.type, 'Q5_0');
  assert.equal(fb.reason, 'tensor blk.2.attn_q.weight: 4160 columns is not a multiple of 256 (Q4_K) — llama.cpp falls back to Q5_0');
  const f16 = d('q5_k_m', 'blk.0.ffn_down.weight', 172, 0);
  assert.equal(f16.type, 'F16');
  assert.match(f16.reason, /172 columns is not a multiple of 256 \(Q6_K\) — nor of 32 \(Q8_0\): llama.cpp falls back to F16/);
});

test('an importance matrix file that is not one is refused with its name and what is wrong', async () => {
  const dir = tempDir();
  const noCounts = join(dir, 'no-counts.gguf');
  const sums = new Float32Array([1, 2, 3, 4]);
  await writeGguf(
    noCounts,
    [],
    [{ name: 'blk.0.attn_q.weight.in_sum2', shape: [1, 4], type: 'F32', data: () => new Uint8Array(sums.buffer) }],
  );
  await assert.rejects(readImatrix(noCounts), (e: Error) => {
    assert.equal(e.name, 'InputError');
    assert.match(
      e.message,
      /no-counts\.gguf: not an importance matrix: "blk\.0\.attn_q\.weight\.in_sum2" has no "blk\.0\.attn_q\.weight\.counts"/,
    );
    return true;
  });
  const empty = join(dir, 'model.gguf');
  await writeGguf(empty, [], [{ name: 'token_embd.weight', shape: [1, 4], type: 'F32', data: () => new Uint8Array(sums.buffer) }]);
  await assert.rejects(readImatrix(empty), /model\.gguf: not an importance matrix: it holds no "\*\.in_sum2" tensors/);
  const good = join(dir, 'imatrix.gguf');
  const counts = new Float32Array([2, 0]);
  const two = new Float32Array([2, 4, 6, 8]);
  await writeGguf(
    good,
    [],
    [
      { name: 'e.in_sum2', shape: [2, 2], type: 'F32', data: () => new Uint8Array(two.buffer) },
      { name: 'e.counts', shape: [2], type: 'F32', data: () => new Uint8Array(counts.buffer) },
    ],
  );
  assert.deepEqual([...(await readImatrix(good)).get('e')!], [1, 2, 1, 1], 'sums / count per matrix; 1 where a matrix saw no tokens');
});
