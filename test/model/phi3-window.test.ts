// Phi-3 with a sliding window (Phi-3-mini-4k-instruct: 2047 of 4096 positions): phi3-tiny with sliding_window 8, which
// Hugging Face's Phi3Model applies on every layer (query p sees keys in (p - 8, p]), in every attention form.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportedArtifact, needsSharedModel, sharedModel, tempDir } from '../support.js';
import { readModelSpec } from '../../src/model/architectures/index.js';
import { DecoderModel, type StepLogits } from '../../src/runtime/decoder.js';
import { checkCachedDecoding, checkPaddedBatch, fullPass, maxDiff } from './window-checks.js';

const WINDOW = 8;
/** 30 ids: several windows long. */
const IDS = Array.from({ length: 30 }, (_, i) => (i * 37 + 11) % 500);

/** phi3-tiny with config.json's sliding_window set to `window`, in a temp dir. */
function withWindow(window: number | null): string {
  const dir = tempDir();
  const source = sharedModel('phi3-tiny');
  for (const f of readdirSync(source).filter((f) => !f.endsWith('.gguf'))) copyFileSync(join(source, f), join(dir, f));
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  config.sliding_window = window;
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return dir;
}

const skip = needsSharedModel('phi3-tiny');
/** The first form's windowed logits: the others must give the same past the window too. */
let firstForm: StepLogits | undefined;
const windowed = skip ? '' : withWindow(WINDOW);

test('phi3 reads sliding_window as a window on every layer; one as long as the context is none', { skip }, () => {
  const spec = readModelSpec(windowed);
  assert.equal(spec.slidingWindow, WINDOW);
  assert.equal(spec.slidingLayers, undefined, 'no per-layer pattern: every layer slides');
  // Phi-3.5 / Phi-4-mini set sliding_window to max_position_embeddings or more: the unwindowed graph.
  assert.equal(readModelSpec(withWindow(256)).slidingWindow, undefined);
  assert.equal(readModelSpec(sharedModel('phi3-tiny')).slidingWindow, undefined);
});

for (const form of ['fused', 'standard', 'inplace'] as const) {
  test(`phi3-tiny with sliding_window ${WINDOW}, ${form}: the window applies exactly, cached decoding and padding agree`, {
    skip,
  }, async () => {
    const model = await DecoderModel.open(await exportedArtifact(windowed, form), { device: 'cpu' });
    const plain = await DecoderModel.open(await exportedArtifact(sharedModel('phi3-tiny'), form), { device: 'cpu' });
    const logits = await fullPass(model, IDS);
    const unwindowed = await fullPass(plain, IDS);
    // Queries 0..7 see at most 8 keys, all inside the window: as without it. From query 8 on, key 0 (and more) is out.
    let inside = 0;
    for (let t = 0; t < WINDOW; t++) inside = Math.max(inside, maxDiff(logits.at(0, t), unwindowed.at(0, t)));
    const atWindow = maxDiff(logits.at(0, WINDOW), unwindowed.at(0, WINDOW));
    let past = 0;
    for (let t = WINDOW; t < IDS.length; t++) past = Math.max(past, maxDiff(logits.at(0, t), unwindowed.at(0, t)));
    console.log(
      `# ${form}: |windowed - unwindowed| positions < ${WINDOW}: ${inside.toExponential(2)}, at ${WINDOW}: ${atWindow.toExponential(2)}, max after: ${past.toExponential(2)}`,
    );
    assert.ok(inside < 1e-5, `the window changed logits inside it by ${inside}`);
    assert.ok(atWindow > 1e-3, `the window does not apply at position ${WINDOW} (${atWindow})`);
    firstForm ??= logits;
    let forms = 0;
    for (let t = 0; t < IDS.length; t++) forms = Math.max(forms, maxDiff(logits.at(0, t), firstForm.at(0, t)));
    assert.ok(forms < 1e-4, `${form} differs from the fused form by ${forms}`);

    // Token by token through the cache, past the window, equals the full pass.
    const step = await checkCachedDecoding(model, IDS, logits);
    console.log(`# ${form}: cached decoding vs the full pass: ${step.toExponential(2)}`);

    // A right-padded batch (one row longer than the window, one shorter) equals each row alone, prefill and decode.
    await checkPaddedBatch(model, IDS);
    await Promise.all([model.release(), plain.release()]);
  });
}
