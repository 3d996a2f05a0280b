// GGUF writing refused where llama.cpp could not run the model as written, or the options contradict each other:
// one line naming what is wrong, exit code 2, nothing written (neither the file nor a temporary beside it).
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { MHA, NEEDS_SHARED, needsSharedModel, runCli, SAMPLE_TEXT, sharedModel, tempDir } from '../support.js';

/** A copy of a model folder (without GGUF files) with config.json, and optionally tokenizer.json, changed. */
function variant(source: string, edit: (config: Record<string, unknown>) => void, tokenizer?: (t: Record<string, unknown>) => void) {
  const dir = tempDir();
  for (const f of readdirSync(source).filter((f) => !f.endsWith('.gguf'))) copyFileSync(join(source, f), join(dir, f));
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  edit(config);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  if (tokenizer) {
    const t = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    tokenizer(t);
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(t));
  }
  return dir;
}

/** Runs the command with `-o <empty folder>/m.gguf` and checks the one-line refusal and that nothing was written. */
function refused(args: string[], message: RegExp): void {
  const parent = tempDir();
  const r = runCli([...args, '-o', join(parent, 'm.gguf')]);
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.deepEqual(readdirSync(parent), [], 'nothing written');
}

test('options that contradict --format gguf (or need it) are refused before anything is read', () => {
  refused(['export', MHA, '--dtype', 'f16'], /--dtype f16: a GGUF option \(add --format gguf\)/);
  refused(['export', MHA, '--format', 'gguf', '--layout', 'transformers.js'], /--layout: an ONNX option; --format gguf/);
  refused(['quantize', MHA, '--to', 'q4_0'], /--to q4_0: a GGUF type; add --format gguf/);
  refused(['quantize', MHA, '--format', 'gguf', '--to', 'int4'], /--to int4: --format gguf writes f32, f16, .*q4_k_m/);
  refused(['quantize', MHA, '--format', 'gguf', '--to', 'q4_0', '--block-size', '64'], /--block-size: not a GGUF option/);
  refused(['quantize', MHA, '--to', 'int4', '--no-fallback'], /--no-fallback: a GGUF option/);
  refused(['quantize', MHA, '--format', 'gguf', '--to', 'q8_0', '--eval', 'x.txt'], /--eval: measures ONNX artifacts/);
});

test('a llama with a sliding window shorter than its context: llama.cpp has none', () => {
  const mistral = variant(MHA, (c) => {
    c.architectures = ['MistralForCausalLM'];
    c.model_type = 'mistral';
    c.sliding_window = 16;
  });
  refused(['export', mistral, '--format', 'gguf'], /sliding_window 16 is shorter than the context 128: llama\.cpp's llama architecture/);
});

test('rows that do not fit the type, with --no-fallback: refused, naming the tensor', () => {
  // tiny-llama-mha: its tied token_embd (the output, Q6_K) has rows of 64, its ffn_down of 80, which fit no 32-block.
  refused(['quantize', MHA, '--format', 'gguf', '--to', 'q4_0', '--no-fallback'], /tensor token_embd\.weight: .*--no-fallback refuses it/);
  const parent = tempDir();
  const r = runCli(['quantize', MHA, '--format', 'gguf', '--to', 'q4_0', '-o', join(parent, 'm.gguf'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(
    JSON.parse(r.stdout).fallbacks.some((f: string) => /ffn_down\.weight: Q4_0 -> F16/.test(f)),
    'the fallback is reported',
  );
});

test('-o naming a folder or a file that is not a GGUF: refused, the folder untouched', () => {
  const parent = tempDir();
  mkdirSync(join(parent, 'm.gguf'));
  const r = runCli(['export', MHA, '--format', 'gguf', '-o', join(parent, 'm.gguf')]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /is a folder; a GGUF output is one file/);
  assert.deepEqual(readdirSync(join(parent, 'm.gguf')), []);
  writeFileSync(join(parent, 'notes.txt'), 'keep me');
  const r2 = runCli(['export', MHA, '--format', 'gguf', '-o', join(parent, 'notes.txt')]);
  assert.equal(r2.code, 2, r2.stderr);
  assert.match(r2.stderr, /exists and is not a GGUF file/);
  assert.equal(readFileSync(join(parent, 'notes.txt'), 'utf8'), 'keep me');
});

test('layer patterns llama.cpp fixes: Gemma 3 sliding layers, SmolLM3 rotary layers', { skip: NEEDS_SHARED }, (t) => {
  if (needsSharedModel('gemma3-tiny') || needsSharedModel('smollm3-tiny')) return t.skip('gemma3-tiny or smollm3-tiny is absent');
  const gemma = variant(sharedModel('gemma3-tiny'), (c) => {
    c.layer_types = ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention', 'sliding_attention', 'full_attention'];
  });
  refused(
    ['export', gemma, '--format', 'gguf'],
    /llama\.cpp fixes a sliding window on all layers but each sixth, which layer 1 does not follow/,
  );
  const smol = variant(sharedModel('smollm3-tiny'), (c) => {
    c.no_rope_layers = [1, 0, 1, 1];
  });
  refused(['export', smol, '--format', 'gguf'], /rotary on every layer but each fourth .* which layer 1 does not follow/);
});

test('a byte-level pre-tokenizer llmopt cannot name for llama.cpp: refused', { skip: needsSharedModel('qwen3-tiny') }, () => {
  const odd = variant(
    sharedModel('qwen3-tiny'),
    () => {},
    (tok) => {
      tok.pre_tokenizer = {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: '\\p{L}+|\\s+' }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      };
    },
  );
  refused(
    ['export', odd, '--format', 'gguf'],
    /tokenizer\.json: llmopt cannot name this pre-tokenizer for llama\.cpp .*no GGUF is written/,
  );
});

test("--exclude: Phi-3's fused attn_qkv is kept float whole or not at all", { skip: needsSharedModel('phi3-tiny') }, () => {
  const phi3 = sharedModel('phi3-tiny');
  refused(
    ['quantize', phi3, '--format', 'gguf', '--to', 'q4_k_m', '--exclude', '*q_proj'],
    /--exclude: model\.layers\.0\.self_attn\.q_proj is stored with .* in GGUF tensor "blk\.0\.attn_qkv\.weight"/,
  );
  const parent = tempDir();
  const r = runCli(['quantize', phi3, '--format', 'gguf', '--to', 'q4_k_m', '--exclude', '*_proj', '-o', join(parent, 'm.gguf'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).excluded, [
    'blk.0.ffn_down.weight',
    'blk.0.ffn_up.weight',
    'blk.0.attn_output.weight',
    'blk.0.attn_qkv.weight',
    'blk.1.ffn_down.weight',
    'blk.1.ffn_up.weight',
    'blk.1.attn_output.weight',
    'blk.1.attn_qkv.weight',
    'blk.2.ffn_down.weight',
    'blk.2.ffn_up.weight',
    'blk.2.attn_output.weight',
    'blk.2.attn_qkv.weight',
  ]);
});

test('--clip search where there is nothing to search: a float type, or GPTQ that rounds every quantized tensor', () => {
  for (const to of ['f32', 'f16', 'bf16'])
    refused(
      ['quantize', MHA, '--format', 'gguf', '--to', to, '--clip', 'search'],
      new RegExp(`--clip search: --to ${to} has no quantization grid`),
    );
  // The tied embedding kept in F32: every block-typed tensor is a GPTQ-rounded Q4_0 matrix (ffn_down falls back to F16).
  const gptq = ['--method', 'gptq', '--calib', SAMPLE_TEXT, '--clip', 'search', '--exclude', 'model.embed_tokens'];
  refused(['quantize', MHA, '--format', 'gguf', '--to', 'q4_0', ...gptq], /--clip search: with --method gptq .* nothing to search/);
});
