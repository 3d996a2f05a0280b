// Generates the tiny random Llama checkpoints under fixtures/ that tests run against, byte for byte deterministic.
// Regenerate with `npx tsx scripts/make-fixtures.ts` (or `npm run fixtures`); test/fixtures.test.ts fails if they drift.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSyntheticLlama, type SyntheticSpec } from '../src/model/synthetic.js';

const FIXTURES: SyntheticSpec[] = [
  {
    name: 'tiny-llama-mha',
    shards: 1,
    config: {
      hidden_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 4,
      intermediate_size: 80,
      vocab_size: 320,
      max_position_embeddings: 128,
      rope_theta: 10000,
      rope_scaling: null,
      rms_norm_eps: 1e-5,
      tie_word_embeddings: true,
      attention_bias: false,
      mlp_bias: false,
      torch_dtype: 'float32',
    },
  },
  {
    name: 'tiny-llama-gqa',
    shards: 2,
    config: {
      hidden_size: 48,
      num_hidden_layers: 3,
      num_attention_heads: 6,
      num_key_value_heads: 2,
      head_dim: 16,
      intermediate_size: 72,
      vocab_size: 320,
      max_position_embeddings: 256,
      rope_theta: 500000,
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 64,
      },
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      attention_bias: true,
      mlp_bias: false,
      torch_dtype: 'bfloat16',
    },
  },
];

/** Names of the fixture folders {@link makeFixtures} writes. */
export const FIXTURE_NAMES: readonly string[] = FIXTURES.map((spec) => spec.name);

/** Writes every fixture into its own folder under `outDir`, replacing what was there. */
export async function makeFixtures(outDir: string): Promise<void> {
  for (const spec of FIXTURES) await writeSyntheticLlama(outDir, spec);
}

const invokedDirectly = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  const outDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
  await makeFixtures(outDir);
  console.log(`fixtures written to ${path.relative(process.cwd(), outDir) || '.'}: ${FIXTURE_NAMES.join(', ')}`);
}
