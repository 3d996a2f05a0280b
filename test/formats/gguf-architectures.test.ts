// The GGUF architecture table and tokenizer metadata on their own: llama.cpp's q/k permutation as its converter
// computes it, every layout transform inverted exactly (the reader's direction), hyperparameters read back into the
// spec fields they were written from, and the pre-tokenizer names read off tokenizer.json.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { expectedTensors, type DecoderSpec } from '../../src/core/spec.js';
import {
  GGUF_ARCHITECTURES,
  fromGgufLayout,
  ggufArchitectureNamed,
  ggufArchitectureOf,
  ggufRowOrder,
  ggufTensorPlan,
  toGgufLayout,
} from '../../src/formats/gguf/architectures.js';
import { ggufTokenizer } from '../../src/formats/gguf/tokenizer.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { GQA, MHA, needsSharedModel, sharedModel, tempDir } from '../support.js';

const MODELS = ['qwen2-tiny', 'qwen3-tiny', 'gemma3-tiny', 'phi3-tiny', 'smollm3-tiny'];

test("llama.cpp's q/k permutation: each head's two halves interleaved, as the converter's reshape/swapaxes", () => {
  const spec = readModelSpec(GQA);
  const plan = ggufTensorPlan(spec, ggufArchitectureOf(spec), expectedTensors(spec));
  const k = plan.find((e) => e.gguf === 'blk.0.attn_k.weight')!;
  const order = ggufRowOrder(spec, k)!;
  const d = spec.headDim;
  // The converter: w.reshape(heads, 2, d / 2, cols).swapaxes(1, 2): GGUF row h*d + 2i + j holds row h*d + j*d/2 + i.
  for (let h = 0; h < spec.kvHeads; h++)
    for (let i = 0; i < d / 2; i++) for (let j = 0; j < 2; j++) assert.equal(order[h * d + 2 * i + j], h * d + j * (d / 2) + i);
  assert.equal(ggufRowOrder(spec, plan.find((e) => e.gguf === 'blk.0.attn_v.weight')!), null);
});

function checkRoundTrip(spec: DecoderSpec, label: string) {
  const arch = ggufArchitectureOf(spec);
  const shapes = expectedTensors(spec);
  const plan = ggufTensorPlan(spec, arch, shapes);
  const covered = plan.flatMap((e) => e.hf).sort();
  assert.deepEqual(covered, [...shapes.keys()].sort(), `${label}: every Hugging Face tensor has one GGUF tensor`);
  let seed = 1;
  for (const e of plan) {
    const parts = e.hf.map((n) =>
      Float32Array.from({ length: shapes.get(n)!.reduce((a, b) => a * b, 1) }, () => (seed = (seed * 48271) % 2147483647) / 2147483647),
    );
    const stored = toGgufLayout(spec, e, parts);
    assert.equal(
      stored.length,
      e.shape.reduce((a, b) => a * b, 1),
      `${label} ${e.gguf}: shape`,
    );
    const back = fromGgufLayout(spec, e, stored);
    // Gemma's stored 1 + w comes back within float32 rounding of 1 (the converter stores the sum in float32 too).
    const tol = e.transform?.kind === 'add' ? 2 ** -23 : 0;
    back.forEach((p, i) => {
      const worst = p.reduce((m, x, j) => Math.max(m, Math.abs(x - parts[i]![j]!)), 0);
      assert.ok(worst <= tol, `${label} ${e.gguf}: ${e.hf[i]} restored within ${tol} (${worst})`);
    });
  }
}

test('every layout transform inverts exactly: llama (fixtures) and every tiny architecture', () => {
  for (const dir of [MHA, GQA]) checkRoundTrip(readModelSpec(dir), dir);
  for (const name of MODELS) if (!needsSharedModel(name)) checkRoundTrip(readModelSpec(sharedModel(name)), name);
});

test('hyperparameters read back into the spec fields they were written from', () => {
  const specs = [readModelSpec(GQA), ...MODELS.filter((n) => !needsSharedModel(n)).map((n) => readModelSpec(sharedModel(n)))];
  for (const spec of specs) {
    const arch = ggufArchitectureOf(spec);
    assert.equal(ggufArchitectureNamed(arch.gguf), arch);
    const into: Partial<DecoderSpec> = {};
    for (const f of arch.metadata) {
      const v = f.write(spec, { configKeys: new Set(['head_dim']), fileType: 0 });
      if (v !== undefined) f.read?.(v, into);
    }
    for (const [k, v] of Object.entries(into)) {
      const want = spec[k as keyof DecoderSpec] ?? (k === 'rotaryDim' ? spec.headDim : undefined);
      if (typeof v === 'number')
        assert.ok(Math.abs(v - Number(want)) <= 1e-6 * Math.abs(Number(want)), `${arch.gguf}.${k}: ${v} vs ${want}`);
      else assert.deepEqual(v, want, `${arch.gguf}.${k}`);
    }
    assert.ok(into.numLayers === spec.numLayers && into.hiddenSize === spec.hiddenSize, arch.gguf);
  }
  assert.deepEqual(
    GGUF_ARCHITECTURES.map((a) => a.gguf),
    ['llama', 'qwen2', 'qwen3', 'smollm3', 'phi3', 'gemma2', 'gemma3'],
  );
});

/** A folder with the fixture's config and a tokenizer.json edited by `edit`. */
function tokenizerFolder(edit: (t: Record<string, unknown>) => void, from = sharedModel('qwen3-tiny')): string {
  const dir = join(tempDir(), 'm');
  mkdirSync(dir);
  const t = JSON.parse(readFileSync(join(from, 'tokenizer.json'), 'utf8'));
  edit(t);
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(t));
  writeFileSync(join(dir, 'tokenizer_config.json'), readFileSync(join(from, 'tokenizer_config.json')));
  return dir;
}

test('pre-tokenizers named from tokenizer.json: gpt-2, llama-bpe, qwen2, smollm', { skip: needsSharedModel('qwen3-tiny') }, () => {
  const split = (regex: string) => (t: Record<string, unknown>) => {
    t.pre_tokenizer = {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    };
  };
  const llama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const cases: Array<[string, (t: Record<string, unknown>) => void]> = [
    ['gpt-2', () => {}],
    ['llama-bpe', split(llama3)],
    ['qwen2', split(llama3.replace('\\p{N}{1,3}', '\\p{N}'))],
    [
      'smollm',
      (t) => {
        t.pre_tokenizer = {
          type: 'Sequence',
          pretokenizers: [
            { type: 'Digits', individual_digits: true },
            { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
          ],
        };
      },
    ],
  ];
  for (const [name, edit] of cases) {
    const tok = ggufTokenizer(tokenizerFolder(edit), { vocabSize: 512, config: {} });
    assert.equal(tok.model, 'gpt2');
    assert.equal(tok.pre, name);
  }
  // A ByteLevel that prepends a space: llama.cpp's BPE never does, so it is not gpt-2.
  assert.throws(
    () =>
      ggufTokenizer(
        tokenizerFolder((t) => ((t.pre_tokenizer as Record<string, unknown>).add_prefix_space = true)),
        { vocabSize: 512, config: {} },
      ),
    /cannot name this pre-tokenizer/,
  );
});

test('a SentencePiece-style tokenizer.json: llama, byte tokens, control specials, merge ranks as scores', () => {
  const tok = ggufTokenizer(MHA, { vocabSize: 320, config: JSON.parse(readFileSync(join(MHA, 'config.json'), 'utf8')) });
  assert.equal(tok.model, 'llama');
  assert.equal(tok.pre, 'default');
  const get = (k: string) => tok.entries.find(([key]) => key === k)?.[1].value;
  const tokens = get('tokenizer.ggml.tokens') as string[];
  const types = get('tokenizer.ggml.token_type') as number[];
  const scores = get('tokenizer.ggml.scores') as number[];
  assert.equal(types[tokens.indexOf('<0x41>')], 6, 'byte token');
  assert.equal(types[get('tokenizer.ggml.bos_token_id') as number], 3, 'bos is a control token');
  const merges = JSON.parse(readFileSync(join(MHA, 'tokenizer.json'), 'utf8')).model.merges as Array<string | string[]>;
  const first = Array.isArray(merges[0]) ? merges[0].join('') : merges[0]!.replace(' ', '');
  const second = Array.isArray(merges[1]) ? merges[1].join('') : merges[1]!.replace(' ', '');
  assert.ok(scores[tokens.indexOf(first)]! > scores[tokens.indexOf(second)]!, 'an earlier merge scores higher');
  assert.equal(get('tokenizer.ggml.add_space_prefix'), undefined, 'the normalizer prepends ▁: llama.cpp default');
});
