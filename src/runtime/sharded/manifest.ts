// The manifest of a sharded model folder (llmopt.json, format "llmopt-sharded"): the layout, what each
// rank holds and runs, and a sha256 of every rank file; opening checks each rank folder against it.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../core/errors.js';
import { readJsonFile } from '../../formats/hf-config.js';
import { MANIFEST_FILE } from '../../formats/output-dir.js';
import type { PassRecord } from '../../formats/artifact.js';
import type { DecoderSegment } from '../../model/decoder.js';
import type { AttentionForm } from '../../core/io.js';

export const SHARD_FORMAT = 'llmopt-sharded';
/** Written into every rank folder: which shard run and rank it belongs to. */
export const RANK_FILE = 'rank.json';

/** One graph of a rank: its file (relative to the model folder) and what it computes. */
export interface SegmentRecord extends DecoderSegment {
  id: string;
  file: string;
  /** The graph's past_key_values inputs (in graph order), empty when it holds no cache. */
  pastNames: string[];
}

export interface RankRecord {
  rank: number;
  stage: number;
  tpRank: number;
  dir: string;
  layers: [number, number];
  heads: [number, number];
  kvHeads: [number, number];
  ffn: [number, number];
  vocab: [number, number];
  segments: SegmentRecord[];
  /** Every tensor the rank holds with its (sliced) shape, Hugging Face names. */
  tensors: Record<string, number[]>;
  /** Every file of the rank folder: bytes and sha256. */
  files: Record<string, { bytes: number; sha256: string }>;
}

export interface ShardManifest {
  format: typeof SHARD_FORMAT;
  formatVersion: 1;
  tool: { name: 'llmopt'; version: string };
  /** Random per shard run; every rank.json repeats it, so ranks of different runs are never mixed. */
  runId: string;
  source: { path: string; configSha256: string };
  layout: {
    tp: number;
    pp: number;
    worldSize: number;
    attention: AttentionForm;
    kvHeads: 'split' | 'replicated';
    vocab: 'replicated' | 'split';
    stages: Array<[number, number]>;
  };
  ranks: RankRecord[];
  passes: PassRecord[];
}

/** Whether `dir` is a sharded model folder (cheap: reads only llmopt.json). */
export function isShardedModel(dir: string): boolean {
  const path = join(dir, MANIFEST_FILE);
  if (!existsSync(path)) return false;
  try {
    return JSON.parse(readFileSync(path, 'utf8')).format === SHARD_FORMAT;
  } catch {
    return false;
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Reads the manifest and checks every rank folder: present, from this shard run, every file of the
 * size and sha256 recorded. Any mismatch is one InputError naming the rank and file.
 */
export async function readShardManifest(dir: string): Promise<ShardManifest> {
  const path = join(dir, MANIFEST_FILE);
  const m = readJsonFile(path) as unknown as ShardManifest;
  if (m.format !== SHARD_FORMAT || m.formatVersion !== 1) throw new InputError(`${path}: not an llmopt sharded-model manifest`);
  if (!Array.isArray(m.ranks) || m.ranks.length !== m.layout.worldSize)
    throw new InputError(`${path}: lists ${m.ranks?.length} ranks for a world size of ${m.layout?.worldSize}`);
  for (const r of m.ranks) {
    const rankDir = join(dir, r.dir);
    if (!existsSync(rankDir))
      throw new InputError(`${rankDir}: rank ${r.rank} folder is missing (the manifest lists ${m.ranks.length} ranks)`);
    const rankFile = join(rankDir, RANK_FILE);
    if (!existsSync(rankFile)) throw new InputError(`${rankFile}: missing; ${r.dir} is not a rank folder of this shard run`);
    const id = readJsonFile(rankFile) as { runId?: string; rank?: number };
    if (id.runId !== m.runId || id.rank !== r.rank) {
      throw new InputError(
        `${r.dir}: rank folder comes from another shard run (run ${id.runId} rank ${id.rank}; ` +
          `the manifest expects run ${m.runId} rank ${r.rank}); re-run llmopt shard`,
      );
    }
    for (const [rel, want] of Object.entries(r.files)) {
      const file = join(rankDir, rel);
      if (!existsSync(file)) throw new InputError(`${file}: missing from rank ${r.rank}`);
      const bytes = statSync(file).size;
      if (bytes !== want.bytes || (await sha256File(file)) !== want.sha256) {
        throw new InputError(`${file}: sha256 does not match the manifest (modified, or from another shard run); re-run llmopt shard`);
      }
    }
  }
  return m;
}
