// gemma3-tiny re-wrapped as the Gemma 3 multimodal checkpoints are published (Gemma3ForConditionalGeneration): text
// keys under text_config, tensors under language_model., and a vision tensor that is not read.
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint, writeSafetensors } from '../../src/formats/safetensors.js';
import { sharedModel, tempDir } from '../support.js';

/** Writes the wrapped checkpoint into a new temp folder and returns it. */
export async function gemma3MultimodalCheckpoint(): Promise<string> {
  const src = sharedModel('gemma3-tiny');
  const dir = tempDir();
  // The keys left to Gemma3TextConfig's defaults would not fit this tiny model, so all are given.
  const text = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
  const config = {
    architectures: ['Gemma3ForConditionalGeneration'],
    model_type: 'gemma3',
    torch_dtype: 'float32',
    text_config: { ...text, architectures: undefined, torch_dtype: undefined },
    vision_config: { model_type: 'siglip_vision_model', hidden_size: 8 },
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(src, f), join(dir, f));
  const ckpt = await Checkpoint.open(src);
  const entries = ckpt.names().map((name) => ({ name: `language_model.${name}`, dtype: 'F32' as const, shape: ckpt.info(name).shape }));
  entries.push({ name: 'vision_tower.vision_model.embeddings.patch_embedding.weight', dtype: 'F32', shape: [2, 2] });
  await writeSafetensors(join(dir, 'model.safetensors'), entries, (name) =>
    name.startsWith('vision_tower.') ? new Uint8Array(16) : ckpt.readRaw(name.slice('language_model.'.length)),
  );
  await ckpt.close();
  return dir;
}
