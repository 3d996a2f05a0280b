// shard's declaration: a float Hugging Face folder -> tensor- and pipeline-parallel ranks (ONNX rank
// folders llmopt runs, or a TensorRT-LLM checkpoint).
import { choice, int, OptionError, outputFolder, printOptions, string } from '../options.js';
import { definePass } from '../pass.js';
import { VOCAB_MODES } from './plan.js';
import { SHARD_ATTENTION_FORMS, SHARD_FORMATS, shardModel } from './shard.js';

export const SHARD_OPTIONS = {
  ...outputFolder('output folder'),
  tp: int({ min: 1, default: 1, help: 'tensor-parallel ranks: attention split by heads, MLP by columns' }),
  pp: int({ min: 1, help: 'pipeline stages: contiguous layer ranges balanced by parameter bytes' }),
  stages: string({ arg: '<ranges>', help: 'explicit layer ranges per stage, e.g. 0-5,6-11 (sets --pp)' }),
  vocab: choice(VOCAB_MODES, {
    arg: '<mode>',
    default: 'replicated',
    help: 'embedding and lm_head: replicated on every rank, or split over the vocabulary across tp ranks',
  }),
  attention: choice(SHARD_ATTENTION_FORMS, { arg: '<form>', default: 'fused', help: 'attention form of the rank graphs' }),
  format: choice(SHARD_FORMATS, {
    arg: '<format>',
    default: 'onnx',
    help: 'onnx: rank folders llmopt runs; tensorrt-llm: a TensorRT-LLM checkpoint (config.json + rank{r}.safetensors)',
  }),
  ...printOptions('no progress bar'),
};

export const shardPass = definePass({
  name: 'shard',
  options: SHARD_OPTIONS,
  reads: { input: ['hf'] },
  readHint: 'shard the float checkpoint',
  writes: (o) => (o.format === 'tensorrt-llm' ? { kind: 'tensorrt-llm' } : { kind: 'sharded' }),
  figures: () => [],
  validate: (o) => {
    if (o.format === 'tensorrt-llm' && o.stages !== undefined) {
      throw new OptionError(
        'stages',
        (n) =>
          `${n('stages')} does not apply to ${n('format')} tensorrt-llm: TensorRT-LLM assigns layers to stages itself (mapping.pp_layers)`,
      );
    }
  },
  run: (o, ctx) => shardModel(ctx.reads.input!, ctx.output, { ...o, onProgress: ctx.onProgress }),
  measured: () => ({}),
});
