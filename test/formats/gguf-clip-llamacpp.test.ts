// quantize --format gguf --clip search --calib checked by llama.cpp: llmopt's calibrated importance, written as a
// llama-imatrix file, makes llama-quantize --imatrix (on llmopt's F32 file of the same weights) write the tensors
// llmopt writes, byte for byte; the Q8_0 tensors (llmopt's own search, which llama.cpp has none of) are no worse.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { readGgufHeader, readGgufTensor, type GgufFile } from '../../src/formats/gguf/file.js';
import { importanceFromSums, type ImatrixEntry, readImatrix, writeImatrix } from '../../src/formats/gguf/quants/imatrix.js';
import { dequantizeRows } from '../../src/formats/gguf/quants/index.js';
import { exportGguf, floatTypeOf, writeGgufModel } from '../../src/passes/export/gguf.js';
import { quantizeGguf } from '../../src/passes/quantize/gguf.js';
import { DREAMS_TRAIN, needsSharedModel, sharedModel, tempDir } from '../support.js';
import { LLAMACPP, llamacppSkip } from './gguf-support.js';

const QUANTIZE = join(LLAMACPP, 'bin', 'llama-quantize');

const floats = async (f: GgufFile, name: string) => {
  const t = f.tensors.find((u) => u.name === name)!;
  const cols = t.shape.at(-1)!;
  return dequantizeRows(
    t.type,
    await readGgufTensor(f, t),
    t.shape.slice(0, -1).reduce((a, b) => a * b, 1),
    cols,
  );
};
const squaredError = (a: Float32Array, b: Float32Array) => a.reduce((e, x, i) => e + (x - b[i]!) ** 2, 0);

test("aidreams-260k --clip search --calib: llama-quantize --imatrix with llmopt's importance writes the same tensors", {
  skip: llamacppSkip() ?? needsSharedModel('aidreams-260k'),
}, async (t) => {
  const source = sharedModel('aidreams-260k');
  const dir = tempDir('llmopt-gguf-clip-');
  const f32 = join(dir, 'f32.gguf');
  await exportGguf(source, f32, { dtype: 'f32' });
  const dense = readGgufHeader(f32);
  // Q4_0: make_qx_quants; Q4_1: make_qkx3_quants (aidreams' 64-wide rows fit no 256-super-block: K-types fall back).
  for (const [to, type] of [
    ['q4_0', 'Q4_0'],
    ['q4_1', 'Q4_1'],
  ] as const) {
    const mine = join(dir, `${to}.gguf`);
    const plain = join(dir, `${to}-rtn.gguf`);
    const entries: ImatrixEntry[] = [];
    const common = { to, exclude: [], quantizeEmbeddings: false, fallback: true, method: 'rtn' as const };
    const report = await quantizeGguf(source, mine, {
      ...common,
      clip: 'search',
      calib: DREAMS_TRAIN,
      calibSamples: 16,
      onImportance: (e) => entries.push(e),
    });
    await quantizeGguf(source, plain, common);
    // Every block-typed decoder matrix (q/k/v/o/gate/up; ffn_down's 172 columns fall back to F16) has an entry.
    assert.equal(entries.length, 4 * 6, entries.map((e) => e.name).join(', '));
    assert.ok(report.calibrationTokens > 0 && report.searched!.calibrated === 24 && report.searched!.unit === 1, JSON.stringify(report));
    const imatrix = join(dir, `${to}.imatrix.gguf`);
    await writeImatrix(imatrix, entries, { datasets: ['dreams-train.txt'], chunks: 16, chunkSize: 128 });
    // What llama-quantize reads back is what llmopt searched with.
    const back = await readImatrix(imatrix);
    assert.equal(back.size, entries.length);

    const theirs = join(dir, `${to}-llamacpp.gguf`);
    // llama-quantize has no fallback for a 172-wide row in a 32-block type: ffn_down in F16, as llmopt falls back.
    const args = ['--imatrix', imatrix, '--tensor-type', 'ffn_down=f16', f32, theirs, type, '2'];
    const r = spawnSync(QUANTIZE, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
    assert.equal(r.status, 0, (r.stderr + r.stdout).slice(-2000));
    const [a, b, p] = [readGgufHeader(mine), readGgufHeader(theirs), readGgufHeader(plain)];
    let same = 0;
    for (const u of b.tensors) {
      const m = a.tensors.find((x) => x.name === u.name);
      assert.ok(m, `${u.name} in llmopt's file`);
      assert.equal(m.type, u.type, `${to} ${u.name}: llama.cpp ${u.type}, llmopt ${m.type}`);
      const [mb, tb] = [await readGgufTensor(a, m), await readGgufTensor(b, u)];
      if (u.type === 'Q8_0') {
        // llama.cpp rounds Q8_0 to nearest; llmopt's searched scale is never further from the float weights.
        const x = await floats(dense, u.name);
        const [em, et] = [squaredError(x, await floats(a, u.name)), squaredError(x, await floats(b, u.name))];
        t.diagnostic(`${to} ${u.name} Q8_0 squared error: llmopt search ${em.toExponential(3)}, llama.cpp ${et.toExponential(3)}`);
        assert.ok(em <= et, `${u.name}: ${em} > ${et}`);
        continue;
      }
      assert.ok(Buffer.from(mb).equals(Buffer.from(tb)), `${to} ${u.name} (${u.type}): bytes differ from llama-quantize --imatrix`);
      same++;
    }
    // The importance mattered: the searched matrices are not round-to-nearest's.
    for (const e of entries) {
      const [x, y] = [a.tensors.find((u) => u.name === e.name)!, p.tensors.find((u) => u.name === e.name)!];
      assert.ok(!Buffer.from(await readGgufTensor(a, x)).equals(Buffer.from(await readGgufTensor(p, y))), `${e.name} is plain RTN`);
    }
    t.diagnostic(`${to}: ${same} tensors identical to llama-quantize --imatrix`);
  }
});

test("aidreams-260k: llmopt's calibrated importance is what llama-imatrix measures on the same text", {
  skip: llamacppSkip() ?? needsSharedModel('aidreams-260k'),
}, async (t) => {
  const source = sharedModel('aidreams-260k');
  const dir = tempDir('llmopt-gguf-imatrix-');
  const f32 = join(dir, 'f32.gguf');
  await exportGguf(source, f32, { dtype: 'f32' });
  // llama-imatrix: the text as one stream in chunks of 128 tokens; llmopt: one window per line (~113 tokens each),
  // so 32 chunks and 36 lines cover about the same text.
  const theirsPath = join(dir, 'llama-imatrix.gguf');
  const args = ['-m', f32, '-f', DREAMS_TRAIN, '-o', theirsPath, '-t', '2', '-c', '128', '--chunks', '32'];
  const r = spawnSync(join(LLAMACPP, 'bin', 'llama-imatrix'), args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, (r.stderr + r.stdout).slice(-2000));
  const theirs = await readImatrix(theirsPath);
  const entries: ImatrixEntry[] = [];
  const o = { to: 'q4_0' as const, exclude: [], quantizeEmbeddings: false, fallback: true, method: 'rtn' as const };
  await quantizeGguf(source, join(dir, 'q4_0.gguf'), {
    ...o,
    clip: 'search',
    calib: DREAMS_TRAIN,
    calibSamples: 36,
    onImportance: (e) => entries.push(e),
  });
  assert.equal(entries.length, 24);
  let worst = 0;
  for (const e of entries) {
    const [mine, ref] = [importanceFromSums(e.sums, e.tokens), theirs.get(e.name)];
    assert.ok(ref && ref.length === mine.length, `${e.name}: llama-imatrix has no entry of ${mine.length}`);
    const rel = mine.reduce((a, v, i) => a + Math.abs(v - ref[i]!) / ref[i]!, 0) / mine.length;
    assert.ok(rel < 0.2, `${e.name}: llmopt's importance differs from llama-imatrix's by ${rel.toFixed(3)} on average`);
    worst = Math.max(worst, rel);
  }
  t.diagnostic(`mean relative difference from llama-imatrix, worst tensor: ${worst.toFixed(3)}`);
});

test('aidreams-260k --method awq --clip search: llama-quantize --imatrix on the AWQ-folded F32 file writes the same tensors', {
  skip: llamacppSkip() ?? needsSharedModel('aidreams-260k'),
}, async (t) => {
  const source = sharedModel('aidreams-260k');
  const dir = tempDir('llmopt-gguf-clip-awq-');
  const entries: ImatrixEntry[] = [];
  let folded = new Map<string, Float32Array>();
  const mine = join(dir, 'awq.gguf');
  const o = { to: 'q4_0' as const, exclude: [], quantizeEmbeddings: false, fallback: true, method: 'awq' as const };
  const report = await quantizeGguf(source, mine, {
    ...o,
    clip: 'search',
    calib: DREAMS_TRAIN,
    calibSamples: 16,
    onImportance: (e) => entries.push(e),
    onAwqFloat: (m) => {
      folded = m;
    },
  });
  assert.ok(report.awq && report.awq.groups > 0 && entries.length === 24, JSON.stringify(report.awq));
  // The folded float model as llmopt's F32 GGUF (the converter's layout), then llama.cpp's imatrix quantization of it.
  const f32 = join(dir, 'folded-f32.gguf');
  await writeGgufModel(source, f32, { fileType: 0, typeOf: floatTypeOf('F32'), overrides: folded });
  const imatrix = join(dir, 'awq.imatrix.gguf');
  await writeImatrix(imatrix, entries, { datasets: ['dreams-train.txt'], chunks: 16, chunkSize: 128 });
  const theirs = join(dir, 'awq-llamacpp.gguf');
  const args = ['--imatrix', imatrix, '--tensor-type', 'ffn_down=f16', f32, theirs, 'Q4_0', '2'];
  const r = spawnSync(QUANTIZE, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, (r.stderr + r.stdout).slice(-2000));
  const [a, b] = [readGgufHeader(mine), readGgufHeader(theirs)];
  let same = 0;
  for (const u of b.tensors) {
    const m = a.tensors.find((x) => x.name === u.name)!;
    assert.equal(m.type, u.type, u.name);
    if (u.type === 'Q8_0') continue; // llmopt's own search (checked above)
    const equal = Buffer.from(await readGgufTensor(a, m)).equals(Buffer.from(await readGgufTensor(b, u)));
    assert.ok(equal, `awq q4_0 ${u.name} (${u.type}): bytes differ from llama-quantize --imatrix on the folded weights`);
    same++;
  }
  t.diagnostic(`awq q4_0: ${same} tensors identical to llama-quantize --imatrix on the folded F32 file`);
});
