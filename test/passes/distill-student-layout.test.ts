// A distillation student is saved in its architecture's own layout: Phi-3's q/k/v and gate/up, trained as parts,
// are written back as the fused qkv_proj and gate_up_proj the source had, same names, shapes and (untrained) bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsSharedModel, sharedModel, tempDir } from '../support.js';
import { Checkpoint } from '../../src/formats/safetensors.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { loadStudent, saveStudent, shallowStudent } from '../../src/passes/distill/student.js';

test('a phi3 student is saved with fused tensors, byte for byte the source when untrained', {
  skip: needsSharedModel('phi3-tiny'),
}, async () => {
  const source = sharedModel('phi3-tiny');
  const student = await loadStudent(source, readModelSpec(source));
  assert.ok(student.weights.has('model.layers.0.self_attn.k_proj.weight'), 'the student trains the parts');
  const dir = tempDir();
  await saveStudent(dir, student);
  const [a, b] = await Promise.all([Checkpoint.open(source), Checkpoint.open(dir)]);
  assert.deepEqual(b.names().sort(), a.names().sort());
  for (const name of a.names()) {
    assert.deepEqual(b.info(name).shape, a.info(name).shape, name);
    assert.deepEqual(await b.readRaw(name), await a.readRaw(name), name);
  }
  await Promise.all([a.close(), b.close()]);
});

// A shallow student keeps each chosen layer's own kind: SmolLM3's layer 3 has no rotary, Gemma 3's layer 5 is global.
test('a shallow student takes its per-layer fields and config lists from the layers it keeps', {
  skip: needsSharedModel('smollm3-tiny') ?? needsSharedModel('gemma3-tiny'),
}, async () => {
  const smol = await shallowStudent(sharedModel('smollm3-tiny'), [0, 3]);
  assert.deepEqual(smol.spec.ropeLayers, [true, false]);
  assert.deepEqual(smol.config.no_rope_layers, [1, 0]);
  assert.deepEqual(smol.config.layer_types, ['full_attention', 'full_attention']);
  const gemma = await shallowStudent(sharedModel('gemma3-tiny'), [4, 5]);
  assert.deepEqual(gemma.spec.slidingLayers, [true, false]);
  assert.deepEqual(gemma.config.layer_types, ['sliding_attention', 'full_attention']);
  // Saved and read back, the spec is the same.
  const dir = tempDir();
  await saveStudent(dir, gemma);
  assert.deepEqual(readModelSpec(dir).slidingLayers, [true, false]);
});
