// Minimal reproduction of onnxruntime's WebGPU GroupQueryAttention fault, for the upstream report and for
// rechecking each onnxruntime release: one com.microsoft GroupQueryAttention node, fixed inputs, CPU vs
// WebGPU, at prompt lengths around 32 tokens. Exit 0: WebGPU agrees everywhere; 1: it does not (the fault
// reproduces); 2: no WebGPU adapter. Usage (SwiftShader, subgroups of 4, shows the fault):
//   S=../shared/tools/swiftshader LD_LIBRARY_PATH=$S VK_ICD_FILENAMES=$S/vk_swiftshader_icd.json \
//     XDG_RUNTIME_DIR=/tmp npx tsx scripts/repro-gqa-webgpu.ts [--write-model <dir>]
import * as ort from 'onnxruntime-node';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { gqaProblem, maxAbsDiff, type GqaShape } from '../src/runtime/webgpu-problems.js';

const TOLERANCE = 1e-4;
const SHAPES: GqaShape[] = [31, 32, 33, 40, 64].map((seq) => ({ batch: 1, seq, heads: 4, kvHeads: 4, headDim: 16 }));
SHAPES.push({ batch: 1, seq: 40, heads: 8, kvHeads: 2, headDim: 64 });

async function outputOn(model: Uint8Array, feeds: Record<string, ort.Tensor>, device: 'cpu' | 'webgpu', name: string) {
  const s = await ort.InferenceSession.create(model, { executionProviders: [device], logSeverityLevel: 3 });
  try {
    return (await s.run(feeds))[name]!.data as Float32Array;
  } finally {
    await s.release();
  }
}

const version = (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
const writeAt = process.argv.indexOf('--write-model');
const modelDir = writeAt > 0 ? process.argv[writeAt + 1] : undefined;
process.stdout.write(`onnxruntime-node ${version}: GroupQueryAttention, CPU vs WebGPU (tolerance ${TOLERANCE})\n`);
let failing = 0;
for (const shape of SHAPES) {
  const p = gqaProblem(shape);
  if (modelDir) {
    mkdirSync(modelDir, { recursive: true });
    writeFileSync(join(modelDir, `gqa-b${shape.batch}-s${shape.seq}-h${shape.heads}-kv${shape.kvHeads}-d${shape.headDim}.onnx`), p.model);
  }
  const cpu = await outputOn(p.model, p.feeds(), 'cpu', p.output);
  let gpu: Float32Array;
  try {
    gpu = await outputOn(p.model, p.feeds(), 'webgpu', p.output);
  } catch (e) {
    process.stdout.write(`no WebGPU adapter: ${String((e as Error).message).split('\n')[0]}\n`);
    process.exit(2);
  }
  // The first query position whose output differs: the fault starts at the fifth on SwiftShader.
  const width = shape.heads * shape.headDim;
  let first = -1;
  for (let s = 0; s < shape.seq && first < 0; s++) {
    if (maxAbsDiff(cpu.subarray(s * width, (s + 1) * width), gpu.subarray(s * width, (s + 1) * width)) > TOLERANCE) first = s;
  }
  const worst = maxAbsDiff(cpu, gpu);
  if (worst > TOLERANCE) failing++;
  const verdict = worst > TOLERANCE ? `WRONG from query position ${first}` : 'ok';
  process.stdout.write(`${p.name}: max |WebGPU - CPU| ${worst.toExponential(2)}  ${verdict}\n`);
}
process.exit(failing ? 1 : 0);
