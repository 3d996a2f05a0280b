// `llmopt run`: runs a recipe (a YAML list of stages) on a model into one output folder, resuming where
// an earlier run left off; a bare `llmopt run` is the quick start, recipes/quickstart.yaml on the bundled fixture.
import { Command } from 'commander';
import { join } from 'node:path';
import { GateError, InputError } from '../../core/errors.js';
import { findRecipe, loadRecipe, shippedRecipes } from '../../recipes/load.js';
import { runRecipe } from '../../recipes/pipeline.js';
import { describeGate } from '../../recipes/gates.js';
import { reportRows } from '../../recipes/report.js';
import { collect } from '../options.js';
import { Output, table } from '../output.js';

interface RunCliOptions {
  output?: string;
  set: string[];
  from?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

export function runCommand(): Command {
  return new Command('run')
    .description('run a recipe: stages of prune, distill, quantize, export, shard, eval and bench, with gates and a report')
    .argument('[recipe]', `a recipe file, or a shipped recipe's name (${shippedRecipes().join(', ')})`, 'quickstart')
    .argument('[model]', "model folder (default: the recipe's model:, the bundled fixture for quickstart)")
    .option('-o, --output <dir>', 'run folder: a stage folder NN-<pass> each, report.json, report.md (default: out/<recipe name>)')
    .option(
      '--set <stage.key=value>',
      'override a stage option, e.g. quantize.block_size=64 (the value read as YAML; repeatable)',
      collect,
      [],
    )
    .option('--from <stage>', 'run again from this stage (a name or a number), even where an earlier run finished it')
    .option('--force', "replace an output folder that holds another recipe's run")
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress')
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  $ llmopt run\n  $ llmopt run recipes/sparse24-distill-int4.yaml path/to/hf-model -o out/run1\n' +
        '  $ llmopt run int4-gptq path/to/hf-model -o out/run2 --set quantize.block_size=64 --json',
    )
    .action(async (recipeArg: string, model: string | undefined, o: RunCliOptions) => {
      const out = new Output(o);
      const recipe = loadRecipe(findRecipe(recipeArg), o.set);
      const source = model ?? recipe.model;
      if (!source) throw new InputError(`${recipe.file}: names no model: give one, e.g. llmopt run ${recipeArg} path/to/hf-model`);
      const output = o.output ?? join('out', recipe.name);
      let bar: ReturnType<Output['progress']> | null = null;
      const report = await runRecipe(recipe, source, output, {
        from: o.from,
        force: o.force,
        onStage: (stage, status) => {
          const label = `[${stage.index + 1}/${recipe.stages.length}] ${stage.dir}`;
          if (status === 'skipped') out.log(`${label}: finished earlier with the same inputs and options, skipped`);
          if (status === 'start') bar = out.progress(label);
          if (status === 'done') bar?.stop();
        },
        onProgress: (_stage, done, total) => bar?.update(done, total),
      }).finally(() => bar?.stop());
      if (o.json) out.json(report);
      else out.result(`${table(reportRows(report))}\n\nrun folder: ${output} (report.md, report.json)`);
      if (report.failedGate) throw new GateError(`stage ${report.failedGate.stage}: ${describeGate(report.failedGate)} failed`);
    });
}
