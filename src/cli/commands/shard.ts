// `llmopt shard`: tensor- and pipeline-parallel ranks of a Hugging Face checkpoint, as per-rank ONNX
// graphs llmopt's sharded runtime runs (generate / eval / bench) or as a TensorRT-LLM checkpoint.
import { passAction, passCommand } from '../pass-command.js';
import { formatBytes, table } from '../output.js';

export function shardCommand() {
  return passCommand('shard')
    .description('split a model into tensor-parallel (--tp) and pipeline-parallel (--pp) ranks')
    .argument('<model>', 'Hugging Face model folder (float weights)')
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  $ llmopt shard path/to/hf-model --tp 2 --pp 2 -o out/m-tp2pp2\n' +
        '  $ llmopt generate out/m-tp2pp2 --prompt "Once upon a time"\n' +
        '  $ llmopt shard path/to/hf-model --tp 4 --format tensorrt-llm -o out/m-trtllm',
    )
    .action(
      passAction('shard', {
        labels: { '': 'write shards' },
        print: (report, o, out) => {
          if (o.json) return out.json(report);
          const rows: Array<Array<string | number>> = [
            ['output', `${report.output} (${report.format})`],
            [
              'layout',
              `tp ${report.tp} x pp ${report.pp} = ${report.worldSize} ranks; kv heads ${report.kvHeads}, vocabulary ${report.vocab}`,
            ],
            ['stages', report.stages.map(([a, b]) => `${a}-${b - 1}`).join(', ')],
            ...report.ranks.map((r) => [
              `  rank ${r.rank}`,
              `stage ${r.stage}, tp ${r.tpRank}, layers ${r.layers[0]}-${r.layers[1] - 1}: ${formatBytes(r.bytes)}`,
            ]),
            ['balance', `${report.balance.toFixed(3)} (largest rank / mean)`],
            ['time', `${report.seconds.toFixed(1)} s`],
          ];
          out.result(table(rows));
        },
      }),
    );
}
