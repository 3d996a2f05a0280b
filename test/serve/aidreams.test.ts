// `llmopt serve` on aidreams-260k (../shared), exported here: the openai client's completions, whole and
// streamed, equal `llmopt generate`'s greedy output token for token, which is llama2.c's own (reference.json).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import OpenAI from 'openai';
import { exportModel } from '../../src/passes/export.js';
import { AIDREAMS, NEEDS_SHARED, aidreamsReference, runCli, tempDir } from '../support.js';
import { startServer } from './helpers.js';

test('serve on aidreams-260k: completions equal generate and llama2.c greedy', { skip: NEEDS_SHARED }, async () => {
  const artifact = join(tempDir('llmopt-serve-aidreams-'), 'aidreams');
  await exportModel(AIDREAMS, artifact, { attention: 'fused', layout: 'llmopt' });
  const { prompt, ids } = aidreamsReference().greedy_from_prompt;
  const g = runCli(['generate', artifact, '-p', prompt, '-n', String(ids.length), '--json']);
  assert.equal(g.code, 0, g.stderr);
  const want = JSON.parse(g.stdout).outputs[0] as { ids: number[]; text: string };
  assert.deepEqual(want.ids, ids, "generate's greedy ids are llama2.c's");
  const served = await startServer([artifact, '--threads', '1']);
  try {
    const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'none', maxRetries: 0 });
    const ask = { model: 'aidreams', prompt, max_tokens: ids.length, temperature: 0 } as const;
    const whole = await client.completions.create({ ...ask, logprobs: 0 });
    assert.equal(whole.choices[0]!.text, want.text);
    assert.equal(whole.usage!.completion_tokens, ids.length);
    assert.equal(whole.choices[0]!.logprobs!.tokens!.join(''), want.text);
    let text = '';
    let chunks = 0;
    for await (const c of await client.completions.create({ ...ask, stream: true })) {
      text += c.choices[0]?.text ?? '';
      chunks++;
    }
    assert.equal(text, want.text);
    assert.ok(chunks > ids.length / 2, `streamed in ${chunks} chunks`);
  } finally {
    assert.equal(await served.stop(), 0, served.stderr());
  }
});
