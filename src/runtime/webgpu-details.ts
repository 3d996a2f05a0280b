// Child-process entry that reads the WebGPU adapter's own description through Dawn's Node binding (the optional
// `webgpu` package: onnxruntime-node exposes none): vendor, architecture, software or not, subgroup sizes, features
// and the limits that decide kernel paths. One JSON line; a process apart from onnxruntime's own copy of Dawn.

/** What the adapter says of itself (AdapterReport.details). */
export interface AdapterDetails {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** WebGPU's isFallbackAdapter: a software implementation. */
  fallback: boolean;
  subgroupMinSize: number | null;
  subgroupMaxSize: number | null;
  shaderF16: boolean;
  features: string[];
  limits: Record<string, number>;
}

/** The limits that decide onnxruntime's WebGPU kernel paths (workgroup sizes, storage buffers, shared memory). */
const LIMITS = [
  'maxComputeWorkgroupSizeX',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupStorageSize',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxStorageBuffersPerShaderStage',
] as const;

type Adapter = {
  info: Record<string, unknown>;
  features: Iterable<string>;
  limits: Record<string, number>;
};

async function details(): Promise<AdapterDetails | { unavailable: string }> {
  let create: (flags: string[]) => { requestAdapter(): Promise<Adapter | null> };
  try {
    // A name in a variable: the package is optional and ships no types.
    const name = 'webgpu';
    ({ create } = await import(name));
  } catch {
    return { unavailable: "the optional 'webgpu' package (Dawn's Node binding) is not installed" };
  }
  const adapter = await create([]).requestAdapter();
  if (!adapter) return { unavailable: "Dawn's Node binding found no adapter" };
  const info = adapter.info;
  const features = [...adapter.features].sort();
  const num = (v: unknown) => (typeof v === 'number' ? v : null);
  return {
    vendor: String(info.vendor ?? ''),
    architecture: String(info.architecture ?? ''),
    device: String(info.device ?? ''),
    description: String(info.description ?? ''),
    fallback: Boolean(info.isFallbackAdapter),
    subgroupMinSize: num(info.subgroupMinSize),
    subgroupMaxSize: num(info.subgroupMaxSize),
    shaderF16: features.includes('shader-f16'),
    features,
    limits: Object.fromEntries(LIMITS.map((k) => [k, adapter.limits[k]!])),
  };
}

process.stdout.write(`${JSON.stringify(await details())}\n`);
// Dawn keeps the process alive otherwise.
process.exit(0);
