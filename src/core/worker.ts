// Starting a module of our own as a worker thread, from the compiled build or from the sources under tsx.
import { Worker } from 'node:worker_threads';

/**
 * Starts the worker module `name` (no extension) beside the module at `callerUrl` (its import.meta.url): the
 * compiled name.js, or under tsx (tests, benchmarks) name.ts after registering tsx's loader in the worker, which
 * does not inherit the parent's loader hooks.
 */
export function startModuleWorker(callerUrl: string, name: string, workerData?: unknown): Worker {
  if (!callerUrl.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, callerUrl), { workerData });
  const url = new URL(`./${name}.ts`, callerUrl).href;
  const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(url)}); })`;
  return new Worker(boot, { eval: true, workerData });
}
