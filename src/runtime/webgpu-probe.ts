// Child-process entry that probes this machine's WebGPU adapter through onnxruntime-node: is there one,
// does it run float16 shaders, does its GroupQueryAttention kernel agree with the CPU. It prints one JSON
// line; run apart so that Dawn's own warnings and a crashing kernel stay out of the caller's process.
import * as ort from 'onnxruntime-node';
import type { AdapterDetails } from './webgpu-details.js';
import { f16Problem, GQA_CHECK_SHAPES, gqaProblem, maxAbsDiff, type KernelProblem } from './webgpu-problems.js';

/** What one probe found (webgpu-adapter.ts reads it). */
export interface ProbeResult {
  /** Whether a WebGPU adapter was found and ran a kernel. */
  adapter: boolean;
  /** Why not, when it was not: onnxruntime's reason, first line. */
  failure?: string;
  /** Whether the f16 problem ran (false: "requires f16 but the device does not support it"). */
  shaderF16: boolean;
  /** Why the f16 problem failed, when it did. */
  f16Failure?: string;
  /** One entry per self-check shape: the largest |WebGPU - CPU| of the attention output. */
  gqa: { problem: string; maxDiff: number }[];
  /** The adapter's own description (webgpu-details.ts), or why it could not be read. */
  details?: AdapterDetails | { unavailable: string };
}

/** onnxruntime's message, first line, without its source location and check expression. */
const firstLine = (e: unknown) =>
  String((e as Error)?.message ?? e)
    .split('\n')[0]!
    .split(/ was false\. | : FAIL : /)
    .pop()!;

async function output(problem: KernelProblem, device: 'cpu' | 'webgpu'): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(problem.model, { executionProviders: [device], logSeverityLevel: 4 });
  try {
    return (await session.run(problem.feeds()))[problem.output]!.data as Float32Array;
  } finally {
    await session.release();
  }
}

async function probe(): Promise<ProbeResult> {
  const result: ProbeResult = { adapter: false, shaderF16: false, gqa: [] };
  if (!ort.listSupportedBackends().some((b) => b.name === 'webgpu')) {
    return { ...result, failure: 'this onnxruntime-node build has no webgpu provider' };
  }
  for (const shape of GQA_CHECK_SHAPES) {
    const problem = gqaProblem(shape);
    const expected = await output(problem, 'cpu');
    let got: Float32Array;
    try {
      got = await output(problem, 'webgpu');
    } catch (e) {
      if (!result.adapter) return { ...result, failure: firstLine(e) };
      throw e;
    }
    result.adapter = true;
    result.gqa.push({ problem: problem.name, maxDiff: maxAbsDiff(expected, got) });
  }
  const f16 = f16Problem();
  try {
    const expected = await output(f16, 'cpu');
    const got = await output(f16, 'webgpu');
    result.shaderF16 = maxAbsDiff(expected, got) === 0;
    if (!result.shaderF16) result.f16Failure = 'a float16 Gather returned wrong values';
  } catch (e) {
    result.f16Failure = firstLine(e).replace(/^.*Status Message: (\S+:\d+ \S+ )?/, '');
  }
  return result;
}

process.stdout.write(`${JSON.stringify(await probe())}\n`);
