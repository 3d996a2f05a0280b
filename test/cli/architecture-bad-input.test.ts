// Architectures llmopt does not build, and configs or checkpoints it cannot build faithfully: one line
// naming the file, key or tensor (and what is supported), exit code 2, nothing written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { needsSharedModel, runCli, sharedModel, tempDir } from '../support.js';

/** A copy of a ../shared tiny checkpoint in a temp folder, with config.json changed by `edit`. */
function variant(name: string, edit: (config: Record<string, unknown>) => void): string {
  const dir = tempDir();
  for (const f of readdirSync(sharedModel(name)).filter((f) => !f.endsWith('.gguf')))
    copyFileSync(join(sharedModel(name), f), join(dir, f));
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  edit(config);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return dir;
}

function exportFails(source: string, message: RegExp): void {
  const parent = tempDir();
  const r = runCli(['export', source, '-o', join(parent, 'out')]);
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.deepEqual(readdirSync(parent), [], 'nothing written');
}

const SUPPORTED = /is not supported \(supported: llama, mistral, qwen2 .*qwen3 .*smollm3.*gemma2.*gemma3_text.*gemma3 \(its text model\)/;

test('other model types and architectures: one line listing what is supported', { skip: needsSharedModel('qwen3-tiny') }, () => {
  const cases: Array<[string, string]> = [
    ['qwen3_moe', 'Qwen3MoeForCausalLM'],
    ['qwen2_moe', 'Qwen2MoeForCausalLM'],
    ['mamba', 'MambaForCausalLM'],
    ['llava', 'LlavaForConditionalGeneration'],
  ];
  for (const [modelType, cls] of cases) {
    const dir = variant('qwen3-tiny', (c) => {
      c.model_type = modelType;
      c.architectures = [cls];
    });
    exportFails(dir, new RegExp(`config\\.json: model_type "${modelType}", ${cls} ${SUPPORTED.source}`));
  }
  // A known model_type with a class it does not build.
  exportFails(
    variant('qwen3-tiny', (c) => (c.architectures = ['Qwen3ForSequenceClassification'])),
    new RegExp(`model_type "qwen3", Qwen3ForSequenceClassification ${SUPPORTED.source}`),
  );
});

test('Qwen2 with use_sliding_window: true is refused', { skip: needsSharedModel('qwen2-tiny') }, () => {
  exportFails(
    variant('qwen2-tiny', (c) => (c.use_sliding_window = true)),
    /config\.json: "use_sliding_window" true is not supported \(sliding-window attention; supported: false\)/,
  );
});

test('an unsupported rope type is refused', { skip: needsSharedModel('qwen3-tiny') }, () => {
  exportFails(
    variant('qwen3-tiny', (c) => (c.rope_scaling = { rope_type: 'yarn', factor: 4 })),
    /config\.json: rope_scaling type "yarn" is not supported \(supported: default, linear, llama3\)/,
  );
  exportFails(
    variant('qwen3-tiny', (c) => (c.partial_rotary_factor = 0.5)),
    /config\.json: "partial_rotary_factor" 0\.5 is not supported \(supported: 1\)/,
  );
});

test('a missing q/k norm tensor is named', { skip: needsSharedModel('smollm3-tiny') }, () => {
  // SmolLM3's tensors under a Qwen3 config: everything but the q/k norms is there.
  const dir = variant('smollm3-tiny', (c) => {
    c.model_type = 'qwen3';
    c.architectures = ['Qwen3ForCausalLM'];
    c.no_rope_layers = undefined;
  });
  exportFails(dir, /tensor "model\.layers\.0\.self_attn\.q_norm\.weight" is missing \(config\.json implies it\)/);
});

test('a no_rope_layers list whose length is not num_hidden_layers is refused', { skip: needsSharedModel('smollm3-tiny') }, () => {
  exportFails(
    variant('smollm3-tiny', (c) => (c.no_rope_layers = [1, 1, 0])),
    /config\.json: "no_rope_layers" has 3 entries, but num_hidden_layers is 4/,
  );
  exportFails(
    variant('smollm3-tiny', (c) => (c.no_rope_layers = [1, 1, 2, 0])),
    /config\.json: "no_rope_layers" must be a list of 0 and 1 per layer/,
  );
});

test('phi3: a fused tensor whose rows do not split as config.json says is named', { skip: needsSharedModel('phi3-tiny') }, () => {
  // 4 key/value heads instead of 2: qkv_proj would need 128 + 128 + 128 rows; the checkpoint has 128 + 64 + 64.
  exportFails(
    variant('phi3-tiny', (c) => (c.num_key_value_heads = 4)),
    new RegExp(
      'model\\.safetensors: tensor "model\\.layers\\.0\\.self_attn\\.qkv_proj\\.weight" has shape \\[256,128\\], ' +
        'config\\.json implies \\[384,128\\] \\(its rows split as q_proj 128 \\+ k_proj 128 \\+ v_proj 128\\)',
    ),
  );
  exportFails(
    variant('phi3-tiny', (c) => (c.intermediate_size = 300)),
    /tensor "model\.layers\.0\.mlp\.gate_up_proj\.weight" has shape \[608,128\], config\.json implies \[600,128\] \(its rows split as gate_proj 300 \+ up_proj 300\)/,
  );
});

test('phi3: unsupported rope types, rope parameters, rotary factors and windows are refused by key', {
  skip: needsSharedModel('phi3-tiny'),
}, () => {
  const longrope = { type: 'longrope', short_factor: Array(12).fill(1), long_factor: Array(12).fill(2) };
  exportFails(
    variant('phi3-tiny', (c) => (c.rope_scaling = { rope_type: 'yarn', factor: 4 })),
    /config\.json: "rope_scaling" type "yarn" is not supported for phi3 \(supported: default, longrope\)/,
  );
  exportFails(
    variant('phi3-tiny', (c) => (c.rope_scaling = { ...longrope, beta_fast: 32 })),
    /config\.json: "rope_scaling\.beta_fast" is not supported for rope type longrope \(supported: type, rope_type, short_factor/,
  );
  // head_dim 32 x 0.75 = 24 rotary dims: 12 factors per list.
  exportFails(
    variant('phi3-tiny', (c) => (c.rope_scaling = { ...longrope, long_factor: Array(16).fill(2) })),
    /config\.json: "rope_scaling\.long_factor" must be a list of 12 positive numbers/,
  );
  exportFails(
    variant('phi3-tiny', (c) => (c.partial_rotary_factor = 0.3)),
    /config\.json: "partial_rotary_factor" 0\.3 is not supported/,
  );
  exportFails(
    // A window is accepted (test/model/phi3-window.test.ts); one that is not a number of tokens is named.
    variant('phi3-tiny', (c) => (c.sliding_window = 0)),
    /config\.json: "sliding_window" must be a positive integer, found 0/,
  );
});

test('Gemma 3: a bad layer_types list or an unsupported hidden_activation is named', { skip: needsSharedModel('gemma3-tiny') }, () => {
  exportFails(
    variant('gemma3-tiny', (c) => (c.layer_types = ['sliding_attention', 'full_attention'])),
    /config\.json: "layer_types" has 2 entries, but num_hidden_layers is 6/,
  );
  exportFails(
    variant('gemma3-tiny', (c) => ((c.layer_types as string[])[2] = 'chunked_attention')),
    /config\.json: "layer_types" entry 2 "chunked_attention" is not supported \(supported: sliding_attention, full_attention\)/,
  );
  exportFails(
    variant('gemma3-tiny', (c) => (c.hidden_activation = 'relu')),
    /config\.json: "hidden_activation" relu is not supported \(supported: gelu_pytorch_tanh\)/,
  );
  // The multimodal wrapper without its text model's config.
  exportFails(
    variant('gemma3-tiny', (c) => {
      c.model_type = 'gemma3';
      c.architectures = ['Gemma3ForConditionalGeneration'];
    }),
    /config\.json: "text_config" is missing \(gemma3 keeps its text model there\)/,
  );
});
