// Opens what `eval --reference` names: another artifact (sharded too), or a Hugging Face folder or GGUF file, which is
// exported to a temporary float32 artifact (standard attention) and removed afterwards.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeOnnxArtifact } from '../model/artifact-writer.js';
import { modelFolderOf } from '../model/gguf-model.js';
import { isRunnable, openModel, type CausalLM, type OpenOptions } from '../runtime/model.js';

export interface OpenedReference {
  model: CausalLM;
  close(): Promise<void>;
}

export async function openReference(path: string, opts: OpenOptions): Promise<OpenedReference> {
  if (isRunnable(path)) {
    const model = await openModel(path, opts);
    return { model, close: () => model.release() };
  }
  const tmp = mkdtempSync(join(tmpdir(), 'llmopt-reference-'));
  try {
    const out = join(tmp, 'model');
    await writeOnnxArtifact(await modelFolderOf(path), out, { attention: 'standard', layout: 'llmopt' });
    const model = await openModel(out, opts);
    return {
      model,
      close: async () => {
        await model.release();
        rmSync(tmp, { recursive: true, force: true });
      },
    };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
