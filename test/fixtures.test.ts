// Tests that the committed fixtures are exactly what scripts/make-fixtures.ts generates, and that they load.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '@huggingface/tokenizers';
import { FIXTURE_NAMES, makeFixtures } from '../scripts/make-fixtures.js';
import { Checkpoint } from '../src/formats/safetensors.js';

const fixturesDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const json = JSON.parse(await fs.readFile(path.join(dir, 'tokenizer.json'), 'utf8'));
  const config = JSON.parse(await fs.readFile(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  return new Tokenizer(json, config);
}

test('regenerated fixtures are byte-identical to the committed ones', async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'llmopt-fixtures-'));
  try {
    await makeFixtures(tmp);
    for (const name of FIXTURE_NAMES) {
      const committed = (await fs.readdir(path.join(fixturesDir, name))).sort();
      const fresh = (await fs.readdir(path.join(tmp, name))).sort();
      assert.deepEqual(committed, fresh, `${name}: file lists differ; run npx tsx scripts/make-fixtures.ts`);
      for (const file of fresh) {
        const a = await fs.readFile(path.join(fixturesDir, name, file));
        const b = await fs.readFile(path.join(tmp, name, file));
        assert.ok(a.equals(b), `${name}/${file} differs from the generator's output; run npx tsx scripts/make-fixtures.ts`);
      }
    }
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
});

test('fixture checkpoints hold Hugging Face Llama tensors of the configured shapes', async () => {
  const expectations: Record<string, { count: number; dtype: string; shapes: Record<string, number[]>; absent: string[] }> = {
    'tiny-llama-mha': {
      count: 1 + 2 * 9 + 1,
      dtype: 'F32',
      shapes: {
        'model.embed_tokens.weight': [320, 64],
        'model.layers.1.self_attn.k_proj.weight': [64, 64],
        'model.layers.0.mlp.down_proj.weight': [64, 80],
        'model.norm.weight': [64],
      },
      absent: ['lm_head.weight', 'model.layers.0.self_attn.q_proj.bias'],
    },
    'tiny-llama-gqa': {
      count: 1 + 3 * 13 + 1 + 1,
      dtype: 'BF16',
      shapes: {
        'model.layers.2.self_attn.q_proj.weight': [96, 48],
        'model.layers.2.self_attn.k_proj.weight': [32, 48],
        'model.layers.2.self_attn.v_proj.bias': [32],
        'model.layers.2.self_attn.o_proj.weight': [48, 96],
        'model.layers.2.self_attn.o_proj.bias': [48],
        'model.layers.0.mlp.gate_proj.weight': [72, 48],
        'lm_head.weight': [320, 48],
      },
      absent: ['model.layers.0.mlp.gate_proj.bias'],
    },
  };
  for (const [name, expected] of Object.entries(expectations)) {
    const ckpt = await Checkpoint.open(path.join(fixturesDir, name));
    try {
      assert.equal(ckpt.names().length, expected.count, name);
      for (const tensor of ckpt.names()) assert.equal(ckpt.info(tensor).dtype, expected.dtype, tensor);
      for (const [tensor, shape] of Object.entries(expected.shapes)) assert.deepEqual(ckpt.info(tensor).shape, shape, tensor);
      for (const tensor of expected.absent) assert.ok(!ckpt.has(tensor), tensor);
      const norm = await ckpt.readFloat32('model.norm.weight');
      const mean = norm.reduce((a, b) => a + b, 0) / norm.length;
      assert.ok(Math.abs(mean - 1) < 0.1, `${name}: norm weights centre on 1 (mean ${mean})`);
    } finally {
      await ckpt.close();
    }
  }
  const gqaFiles = await fs.readdir(path.join(fixturesDir, 'tiny-llama-gqa'));
  assert.ok(gqaFiles.includes('model.safetensors.index.json') && !gqaFiles.includes('model.safetensors'));
});

test('fixture tokenizer encodes with <s>, falls back to bytes and round trips', async () => {
  for (const name of FIXTURE_NAMES) {
    const tokenizer = await loadTokenizer(path.join(fixturesDir, name));
    assert.equal(tokenizer.get_vocab(true).size, 320);

    const text = 'Once upon a time, the cat sat.';
    const { ids, tokens } = tokenizer.encode(text);
    assert.equal(ids[0], 1);
    assert.equal(tokens[0], '<s>');
    assert.ok(tokens.includes('▁the'), `merges apply: ${tokens.join(' ')}`);
    assert.ok(tokens.includes('<0x4F>'), 'uppercase O falls back to its byte');
    assert.ok(ids.every((id: number) => id >= 0 && id < 320));
    assert.equal(tokenizer.decode(ids, { skip_special_tokens: true }), text);

    const unicode = 'café ☕';
    const encoded = tokenizer.encode(unicode);
    for (const byte of ['<0xC3>', '<0xA9>', '<0xE2>', '<0x98>', '<0x95>']) assert.ok(encoded.tokens.includes(byte), byte);
    assert.equal(tokenizer.decode(encoded.ids, { skip_special_tokens: true }), unicode);
  }
});
