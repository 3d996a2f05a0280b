// How a graph runs on this WebGPU adapter: which nodes stay on the CPU because the adapter runs them
// wrong (GroupQueryAttention that failed the self-check) or cannot run them (float16 without shader-f16),
// or a refusal when too much of the graph would have to leave the GPU.
import { readFileSync } from 'node:fs';
import { DeviceError } from '../core/errors.js';
import { decodeModel, Elem } from '../formats/onnx/graph.js';
import { describeAdapter, SELF_CHECK_TOLERANCE, webgpuAdapter, type AdapterReport } from './webgpu-adapter.js';

/** A WebGPU session's routing: nodes onnxruntime must run on its CPU provider, and why, for reports. */
export interface WebGpuPlan {
  adapter: AdapterReport;
  forceCpuNodeNames: string[];
  /** One phrase per routing decision, e.g. "GroupQueryAttention on the CPU (...)". */
  notes: string[];
}

/** What of a graph depends on adapter features: its GroupQueryAttention nodes and where float16 flows. */
export interface GraphNeeds {
  gqaNodes: string[];
  /** com.microsoft DynamicQuantizeMatMul (w8a8 linears): onnxruntime 1.30's WebGPU provider has no kernel for it. */
  dynamicQuantNodes: number;
  /** Nodes that read or write float16 only to look up or widen float16 weights (Gather, Cast, reshapes). */
  f16WeightNodes: string[];
  /** Nodes that compute in float16 (a MatMul, an Add ... with float16 operands), first few. */
  f16ComputeNodes: string[];
}

/** Ops that move or widen float16 data without arithmetic: the CPU can take them at little cost. */
const F16_DATA_OPS = new Set(['Gather', 'Cast', 'Reshape', 'Identity', 'Transpose', 'Squeeze', 'Unsqueeze', 'Flatten', 'Shape']);

/** Reads the graph's structure (not its external weights) and finds what depends on adapter features. */
export function graphNeeds(modelPath: string): GraphNeeds {
  const graph = decodeModel(readFileSync(modelPath)).graph;
  const f16 = new Set<string>();
  for (const t of graph?.initializer ?? []) if (t.dataType === Elem.FLOAT16) f16.add(t.name!);
  for (const v of graph?.input ?? []) if (v.type?.tensorType?.elemType === Elem.FLOAT16) f16.add(v.name!);
  const needs: GraphNeeds = { gqaNodes: [], dynamicQuantNodes: 0, f16WeightNodes: [], f16ComputeNodes: [] };
  // Nodes are topologically ordered in a valid ONNX graph, so one forward sweep propagates float16.
  for (const node of graph?.node ?? []) {
    const name = node.name ?? '';
    if (node.opType === 'GroupQueryAttention') needs.gqaNodes.push(name);
    if (node.opType === 'DynamicQuantizeMatMul') needs.dynamicQuantNodes++;
    const castTo = node.opType === 'Cast' ? Number(node.attribute?.find((a) => a.name === 'to')?.i ?? 0) : null;
    const readsF16 = (node.input ?? []).some((i) => f16.has(i));
    const writesF16 = castTo === Elem.FLOAT16 || (readsF16 && castTo === null);
    if (writesF16) for (const o of node.output ?? []) f16.add(o);
    if (!readsF16 && !writesF16) continue;
    if (F16_DATA_OPS.has(node.opType ?? '')) needs.f16WeightNodes.push(name);
    else needs.f16ComputeNodes.push(name);
  }
  return needs;
}

/**
 * The routing of `modelPath` on this machine's adapter. Throws DeviceError (exit 2) when there is no
 * adapter, or when the graph computes in float16 and the adapter has no shader-f16.
 */
export async function planWebGpu(modelPath: string): Promise<WebGpuPlan> {
  const needs = graphNeeds(modelPath);
  const adapter = await webgpuAdapter();
  if (!adapter.adapter) throw noAdapter(adapter);
  const plan: WebGpuPlan = { adapter, forceCpuNodeNames: [], notes: [] };
  if (needs.gqaNodes.length > 0 && !adapter.gqaCorrect) {
    const worst = Math.max(...adapter.gqa.map((c) => c.maxDiff));
    plan.forceCpuNodeNames.push(...needs.gqaNodes);
    plan.notes.push(
      `GroupQueryAttention on the CPU: this adapter's kernel failed llmopt's self-check (max |diff| ${worst.toPrecision(2)} ` +
        `> ${SELF_CHECK_TOLERANCE}); an artifact exported with --attention standard keeps attention on the GPU`,
    );
  }
  if (needs.dynamicQuantNodes > 0) {
    plan.notes.push(
      `${needs.dynamicQuantNodes} DynamicQuantizeMatMul (w8a8) on the CPU: onnxruntime's WebGPU provider has no kernel for it; ` +
        'int8 or int4 (weight-only) artifacts keep their MatMuls on the GPU',
    );
  }
  const usesF16 = needs.f16WeightNodes.length + needs.f16ComputeNodes.length > 0;
  if (usesF16 && !adapter.shaderF16) {
    if (needs.f16ComputeNodes.length > 0) {
      throw new DeviceError(
        `--device webgpu: ${modelPath} computes in float16 (node ${needs.f16ComputeNodes[0]}) and this WebGPU adapter, ` +
          `${describeAdapter(adapter)}, lacks the shader-f16 feature; run it with --device cpu, or use an fp32, int8 or int4 artifact`,
      );
    }
    plan.forceCpuNodeNames.push(...needs.f16WeightNodes);
    plan.notes.push('float16 weights looked up and widened on the CPU: this adapter lacks shader-f16');
  }
  return plan;
}

/** The DeviceError for "no adapter", naming what the probe and the Vulkan loader said. */
function noAdapter(r: AdapterReport): DeviceError {
  const reason = r.warnings.find((w) => /Couldn't load Vulkan|no drivers|vkCreateInstance/i.test(w)) ?? r.failure ?? 'no reason given';
  const short = reason.replace(/^.*Failed to get a WebGPU adapter: /, '');
  const hint = /Couldn't load Vulkan/.test(reason)
    ? 'install the Vulkan loader (libvulkan1) and a GPU driver with Vulkan support'
    : 'install a GPU driver with Vulkan support (or point VK_ICD_FILENAMES at a Vulkan driver manifest)';
  return new DeviceError(`--device webgpu: no WebGPU adapter found (${short}); ${hint}, or run with --device cpu`);
}
