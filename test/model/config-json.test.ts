// config.json from a spec (configJsonOf, for models made from a spec such as a GGUF file's) reads back as the same
// spec, for every architecture's published-style config: the checkpoints in ../shared and the generated oracles.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DecoderSpec } from '../../src/core/spec.js';
import { tensorNamesIn } from '../../src/formats/safetensors.js';
import { configJsonOf, readModelSpec, specFromConfig } from '../../src/model/architectures/index.js';
import { syntheticConfigJson } from '../../src/model/synthetic.js';
import { LLAMA3_SHAPE, MHA, GQA, NEEDS_SHARED, AIDREAMS, TINY_MODELS, sharedModel } from '../support.js';
import { ORACLE_CHECKPOINTS } from './llamacpp-checkpoints.js';
import { GEMMA2, MISTRAL } from './window-checkpoints.js';

function roundTrip(spec: DecoderSpec, tensors: ReadonlySet<string> | null, what: string): void {
  const json = configJsonOf(spec);
  const back = specFromConfig(JSON.parse(JSON.stringify(json)), `${what} (written)/config.json`, undefined, tensors);
  assert.deepEqual(back, spec, `${what}: ${JSON.stringify(json)}`);
}

test('generated configs of every architecture: spec -> config.json -> the same spec', () => {
  const configs: Array<[string, Record<string, unknown>]> = [
    ...ORACLE_CHECKPOINTS.map((c) => [c.name, c.config] as [string, Record<string, unknown>]),
    // The sliding-window test's configs, as its checkpoint writer completes them.
    ['gemma2 window', { ...GEMMA2, max_position_embeddings: 64 }],
    ['mistral window', { ...MISTRAL, max_position_embeddings: 64 }],
    ...(['llama', 'qwen2', 'qwen3', 'gemma3'] as const).map(
      (a) => [`synthetic ${a}`, syntheticConfigJson({ architecture: a, config: LLAMA3_SHAPE })] as [string, Record<string, unknown>],
    ),
  ];
  for (const [name, config] of configs) roundTrip(specFromConfig(config, `${name}/config.json`), null, name);
});

test('the fixtures and the checkpoints in ../shared: spec -> config.json -> the same spec', { skip: NEEDS_SHARED }, () => {
  for (const dir of [MHA, GQA, AIDREAMS, ...TINY_MODELS.map(sharedModel), sharedModel('gemma3-tiny')]) {
    roundTrip(readModelSpec(dir), tensorNamesIn(dir), dir);
  }
});

test('a spec of an architecture llmopt does not write is refused', () => {
  const spec = specFromConfig(syntheticConfigJson({ architecture: 'llama', config: LLAMA3_SHAPE }), 'x/config.json');
  assert.throws(() => configJsonOf({ ...spec, architecture: 'mamba' }), /architecture "mamba" is not supported/);
});
