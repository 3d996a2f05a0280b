// The one place llmopt talks to onnxruntime-node: opens a decoder session on a device and runs it,
// reporting every input's name, dtype and dims when a run fails.
import * as ort from 'onnxruntime-node';
import { existsSync } from 'node:fs';
import { DeviceError, InputError, LlmoptError } from '../core/errors.js';
import { executionProviders, deviceFailure, type Device } from './device.js';
import { planWebGpu, type WebGpuPlan } from './webgpu-plan.js';

export type Tensor = ort.Tensor;
export const Tensor = ort.Tensor;

export interface SessionOptions {
  device: Device;
  /** Intra-op threads (default: onnxruntime's choice, all cores). */
  threads?: number;
  /**
   * Whether idle intra-op threads spin waiting for work (onnxruntime's default). Sessions that share
   * the cores with others (one per sharded rank) turn it off so a waiting rank does not steal them.
   */
  spinning?: boolean;
  /**
   * onnxruntime's profiler: every node's kernel time goes to `<prefix>_<date>.json` (Chrome trace events),
   * written when endProfiling is called. For finding where a step's time goes, not for normal runs.
   */
  profilePrefix?: string;
}

/** Raised when onnxruntime fails on a run: an internal failure, not bad user input. */
export class RunError extends LlmoptError {}

export class ModelSession {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly path: string,
    readonly device: Device,
    /** On WebGPU: the adapter and the nodes kept on the CPU for it (see webgpu-plan.ts). */
    readonly webgpu: WebGpuPlan | null = null,
  ) {}

  static async open(path: string, opts: SessionOptions): Promise<ModelSession> {
    if (!existsSync(path)) throw new InputError(`${path}: file not found`);
    const providers: ort.InferenceSession.ExecutionProviderConfig[] = executionProviders(opts.device);
    // WebGPU: probe the adapter (once per adapter) and keep on the CPU what it runs wrong or cannot run.
    const webgpu = opts.device === 'webgpu' ? await planWebGpu(path) : null;
    const forced = webgpu?.forceCpuNodeNames ?? [];
    const options: ort.InferenceSession.SessionOptions = {
      // onnxruntime-node refuses an empty forceCpuNodeNames list.
      executionProviders: forced.length ? [{ name: 'webgpu', forceCpuNodeNames: forced }] : providers,
      graphOptimizationLevel: 'all',
      // Shapes change every decode step: memory patterns planned per shape would pile up, and the CPU
      // arena keeps the high-water mark of every shape it saw. Off, RSS stays steadier over long
      // decode loops at no measurable cost in decode speed (npm run bench:runtime).
      enableMemPattern: false,
      enableCpuMemArena: false,
      logSeverityLevel: 3,
    };
    if (opts.threads) options.intraOpNumThreads = opts.threads;
    if (opts.profilePrefix) Object.assign(options, { enableProfiling: true, profileFilePrefix: opts.profilePrefix });
    if (opts.spinning === false) options.extra = { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } };
    try {
      return new ModelSession(await ort.InferenceSession.create(path, options), path, opts.device, webgpu);
    } catch (e) {
      if (opts.device !== 'cpu') throw deviceFailure(opts.device, e);
      throw new InputError(`${path}: onnxruntime cannot load the model (${String((e as Error).message).split('\n')[0]})`);
    }
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Runs the graph; `fetches` may map outputs to pre-allocated tensors (written in place). */
  async run(feeds: Record<string, ort.Tensor>, fetches?: Record<string, ort.Tensor | null>): Promise<Record<string, ort.Tensor>> {
    try {
      return fetches ? await this.session.run(feeds, fetches) : await this.session.run(feeds);
    } catch (e) {
      const described = Object.entries(feeds)
        .map(([k, t]) => `${k}:${t.type}[${t.dims.join(',')}]`)
        .join(' ');
      const first = String((e as Error).message).split('\n')[0];
      if (e instanceof DeviceError) throw e;
      throw new RunError(`${this.path}: run failed (${first}); inputs ${described}`);
    }
  }

  /** Ends profiling (sessions opened with profilePrefix) and writes the trace file. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
