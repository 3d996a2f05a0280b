// The commands whose artifacts must stay byte-identical across refactors: each case is a CLI call
// writing into `out`; every file it writes except the manifests (llmopt.json, whose shape may change;
// a rank's rank.json, which holds a run id) and the training log (timings) is hashed. scripts/record-artifact-hashes.ts records the hashes.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { AIDREAMS, GQA, MHA, ROOT, SAMPLE_TEXT, SHARED } from '../support.js';

export interface GoldenCase {
  name: string;
  /** Needs ../shared (aidreams-260k). */
  shared?: boolean;
  args: (out: string) => string[];
}

const TRAIN = join(SHARED, 'data', 'dreams-train.txt');

export const GOLDEN_CASES: GoldenCase[] = [
  { name: 'export-gqa-fused', args: (o) => ['export', GQA, '-o', o, '--attention', 'fused'] },
  { name: 'export-gqa-standard', args: (o) => ['export', GQA, '-o', o, '--attention', 'standard'] },
  { name: 'export-gqa-inplace', args: (o) => ['export', GQA, '-o', o, '--attention', 'inplace'] },
  { name: 'export-mha-transformersjs', args: (o) => ['export', MHA, '-o', o, '--attention', 'standard', '--layout', 'transformers.js'] },
  { name: 'quantize-gqa-fp16', args: (o) => ['quantize', GQA, '-o', o, '--to', 'fp16', '--attention', 'fused'] },
  // int8 as its CPU default was before 2026-12-01 (symmetric, float embeddings, level 0): the same bytes since.
  {
    name: 'quantize-gqa-int8',
    args: (o) => [
      'quantize',
      GQA,
      '-o',
      o,
      '--to',
      'int8',
      '--attention',
      'fused',
      '--accuracy-level',
      '0',
      '--symmetric',
      '--float-embeddings',
    ],
  },
  {
    name: 'quantize-gqa-int4-asym-emb',
    args: (o) => [
      'quantize',
      GQA,
      '-o',
      o,
      '--to',
      'int4',
      '--asymmetric',
      '--quantize-embeddings',
      '--accuracy-level',
      '4',
      '--block-size',
      '16',
      '--attention',
      'fused',
    ],
  },
  {
    name: 'quantize-gqa-int4-gptq',
    args: (o) => [
      'quantize',
      GQA,
      '-o',
      o,
      '--to',
      'int4',
      '--method',
      'gptq',
      '--calib',
      SAMPLE_TEXT,
      '--calib-samples',
      '8',
      '--act-order',
      '--attention',
      'fused',
      '--accuracy-level',
      '0',
      '--float-embeddings',
    ],
  },
  { name: 'quantize-mha-w8a8', args: (o) => ['quantize', MHA, '-o', o, '--to', 'w8a8', '--attention', 'standard'] },
  {
    name: 'quantize-gqa-ct-int8',
    args: (o) => [
      'quantize',
      GQA,
      '-o',
      o,
      '--to',
      'int8',
      '--format',
      'compressed-tensors',
      '--block-size',
      '16',
      // Groups of 16 are served by vLLM's Exllama kernel only, which takes float16.
      '--serve-dtype',
      'float16',
      '--exclude',
      '*down_proj',
    ],
  },
  { name: 'prune-gqa-24-magnitude', args: (o) => ['prune', GQA, '-o', o, '--sparsity', '2:4'] },
  {
    name: 'prune-gqa-24-wanda',
    args: (o) => ['prune', GQA, '-o', o, '--sparsity', '2:4', '--method', 'wanda', '--calib', SAMPLE_TEXT, '--calib-samples', '8'],
  },
  {
    name: 'prune-mha-50-sparsegpt',
    args: (o) => ['prune', MHA, '-o', o, '--sparsity', '0.5', '--method', 'sparsegpt', '--calib', SAMPLE_TEXT, '--calib-samples', '8'],
  },
  { name: 'shard-gqa-tp2-pp2', args: (o) => ['shard', GQA, '-o', o, '--tp', '2', '--pp', '2'] },
  {
    name: 'shard-gqa-trtllm-tp2',
    args: (o) => ['shard', GQA, '-o', o, '--tp', '2', '--format', 'tensorrt-llm', '--attention', 'standard'],
  },
  {
    name: 'distill-mha-shallow',
    args: (o) => [
      'distill',
      '--teacher',
      MHA,
      '--student-layers',
      '1',
      '--data',
      SAMPLE_TEXT,
      '--steps',
      '3',
      '--batch',
      '2',
      '--seq-len',
      '16',
      '--threads',
      '1',
      '-o',
      o,
    ],
  },
  { name: 'aidreams-export-fused', shared: true, args: (o) => ['export', AIDREAMS, '-o', o, '--attention', 'fused'] },
  {
    name: 'aidreams-quantize-int4-gptq',
    shared: true,
    args: (o) => [
      'quantize',
      AIDREAMS,
      '-o',
      o,
      '--to',
      'int4',
      '--method',
      'gptq',
      '--asymmetric',
      '--calib',
      TRAIN,
      '--calib-samples',
      '32',
      '--attention',
      'fused',
      '--accuracy-level',
      '0',
      '--float-embeddings',
    ],
  },
  {
    name: 'aidreams-prune-24-wanda',
    shared: true,
    args: (o) => ['prune', AIDREAMS, '-o', o, '--sparsity', '2:4', '--method', 'wanda', '--calib', TRAIN, '--calib-samples', '32'],
  },
];

/** Files that record when or where a run happened rather than what it computed. */
const UNHASHED = /(^|\/)(llmopt\.json|rank\.json|train-log\.jsonl|.*\.log)$/;

/**
 * The bytes hashed: JSON files name their inputs by absolute path (a pruned model's config.json records
 * its calibration file), so the checkout's and ../shared's locations are replaced by placeholders.
 */
function hashedBytes(path: string): Buffer | string {
  const bytes = readFileSync(path);
  if (!path.endsWith('.json')) return bytes;
  const root = ROOT.replace(/\/$/, '');
  return bytes.toString('utf8').replaceAll(resolve(SHARED), '<shared>').replaceAll(root, '<root>');
}

/** sha256 of every file under `dir` (relative path -> hex), manifests and logs left out. */
export function hashFolder(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else {
        const rel = relative(dir, p);
        if (!UNHASHED.test(rel)) out[rel] = createHash('sha256').update(hashedBytes(p)).digest('hex');
      }
    }
  };
  walk(dir);
  return out;
}
