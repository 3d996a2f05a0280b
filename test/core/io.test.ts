// The I/O contract matches what the graph builder writes for every attention form, identifies a
// graph without a manifest, and turns a manifest that disagrees with its graph into bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ATTENTION_FORMS, attentionFormOf, cacheOutputs, decoderInputs, io } from '../../src/core/io.js';
import { InputError } from '../../src/core/errors.js';
import { GraphBuilder } from '../../src/formats/onnx/graph.js';
import { ExternalDataWriter } from '../../src/formats/onnx/external-data.js';
import { openHfModel } from '../../src/model/checkpoint.js';
import { buildDecoderGraph } from '../../src/model/decoder.js';
import { openModel } from '../../src/runtime/model.js';
import { GQA, exportedArtifact, tempDir } from '../support.js';

for (const form of ATTENTION_FORMS) {
  test(`${form}: the builder declares exactly the contract's inputs and outputs`, async () => {
    const model = await openHfModel(GQA);
    const data = new ExternalDataWriter(join(tempDir(), 'model.onnx.data'), 'model.onnx.data');
    const g = new GraphBuilder(data);
    try {
      await buildDecoderGraph(g, model.spec, model.weights, { attention: form });
    } finally {
      data.close();
    }
    const L = model.spec.numLayers;
    assert.deepEqual(
      g.inputs.map((v) => v.name),
      decoderInputs(form, L),
    );
    const outputs = [io.logits, ...Array.from({ length: L }, (_, i) => cacheOutputs(form, i)).flat()];
    assert.deepEqual(g.outputs.map((v) => v.name).sort(), outputs.sort());
    assert.equal(attentionFormOf('model.onnx', decoderInputs(form, L), L, null), form);
  });
}

test('a graph that fits no form is bad input naming the file', () => {
  assert.throws(
    () => attentionFormOf('/a/model.onnx', [io.inputIds], 2, null),
    (e: unknown) => e instanceof InputError && /\/a\/model\.onnx: not a 2-layer/.test(e.message),
  );
});

test('a manifest whose attention form disagrees with the graph is bad input naming the file', async () => {
  const src = await exportedArtifact(GQA, 'standard');
  const dir = join(tempDir(), 'mislabelled');
  cpSync(src, dir, { recursive: true });
  const manifestPath = join(dir, 'llmopt.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  manifest.model.attention = 'fused';
  writeFileSync(manifestPath, JSON.stringify(manifest));
  await assert.rejects(openModel(dir, { device: 'cpu' }), (e: unknown) => {
    assert.ok(e instanceof InputError, String(e));
    assert.match(e.message, new RegExp(`${join(dir, 'model.onnx')}: the manifest says fused attention, .*they fit the standard form`));
    return true;
  });
});
