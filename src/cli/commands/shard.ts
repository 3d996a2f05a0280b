// `llmopt shard`: tensor- and pipeline-parallel ranks of a Hugging Face checkpoint, as per-rank ONNX
// graphs llmopt's sharded runtime runs (generate / eval / bench) or as a TensorRT-LLM checkpoint.
import { Command } from 'commander';
import { SHARD_ATTENTION_FORMS, SHARD_FORMATS, shardModel, type ShardOptions } from '../../passes/shard/shard.js';
import { VOCAB_MODES } from '../../passes/shard/plan.js';
import { choiceOption, intOption } from '../options.js';
import { formatBytes, Output, table } from '../output.js';

interface ShardCliOptions extends Omit<ShardOptions, 'onProgress'> {
  output: string;
  json?: boolean;
  quiet?: boolean;
}

export function shardCommand(): Command {
  return new Command('shard')
    .description('split a model into tensor-parallel (--tp) and pipeline-parallel (--pp) ranks')
    .argument('<model>', 'Hugging Face model folder (float weights)')
    .requiredOption('-o, --output <dir>', 'output folder')
    .option('--tp <n>', 'tensor-parallel ranks: attention split by heads, MLP by columns', intOption('--tp', 1), 1)
    .option('--pp <n>', 'pipeline stages: contiguous layer ranges balanced by parameter bytes', intOption('--pp', 1))
    .option('--stages <ranges>', 'explicit layer ranges per stage, e.g. 0-5,6-11 (sets --pp)')
    .option('--vocab <mode>', 'embedding and lm_head: replicated on every rank, or split over the vocabulary across tp ranks', choiceOption('--vocab', VOCAB_MODES), 'replicated')
    .option('--attention <form>', 'attention form of the rank graphs', choiceOption('--attention', SHARD_ATTENTION_FORMS), 'fused')
    .option('--format <format>', 'onnx: rank folders llmopt runs; tensorrt-llm: a TensorRT-LLM checkpoint (config.json + rank{r}.safetensors)', choiceOption('--format', SHARD_FORMATS), 'onnx')
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress bar')
    .addHelpText('after', '\nExample:\n  $ llmopt shard path/to/hf-model --tp 2 --pp 2 -o out/m-tp2pp2\n  $ llmopt generate out/m-tp2pp2 --prompt "Once upon a time"\n  $ llmopt shard path/to/hf-model --tp 4 --format tensorrt-llm -o out/m-trtllm')
    .action(async (model: string, o: ShardCliOptions) => {
      const out = new Output(o);
      const bar = out.progress('write shards');
      const report = await shardModel(model, o.output, { tp: o.tp, pp: o.pp, stages: o.stages, vocab: o.vocab, attention: o.attention, format: o.format, onProgress: bar.update }).finally(bar.stop);
      if (o.json) return out.json(report);
      const rows: Array<Array<string | number>> = [
        ['output', `${report.output} (${report.format})`],
        ['layout', `tp ${report.tp} x pp ${report.pp} = ${report.worldSize} ranks; kv heads ${report.kvHeads}, vocabulary ${report.vocab}`],
        ['stages', report.stages.map(([a, b]) => `${a}-${b - 1}`).join(', ')],
        ...report.ranks.map((r) => [`  rank ${r.rank}`, `stage ${r.stage}, tp ${r.tpRank}, layers ${r.layers[0]}-${r.layers[1] - 1}: ${formatBytes(r.bytes)}`]),
        ['balance', `${report.balance.toFixed(3)} (largest rank / mean)`],
        ['time', `${report.seconds.toFixed(1)} s`],
      ];
      out.result(table(rows));
    });
}
