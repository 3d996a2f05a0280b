// One rank of a sharded model, in its own worker thread: opens the rank's graphs with their own
// onnxruntime sessions, holds the rank's KV cache (one per graph with a cache, per micro-batch group)
// and runs one graph per request, in arrival order.
import { parentPort, workerData } from 'node:worker_threads';
import { DeviceError, InputError } from '../../core/errors.js';
import { ATTENTION, cacheOutputOf, io, isCacheOutput } from '../../core/io.js';
import { createKvCache, defaultCacheKind, type CacheLayout, type KvCache } from '../kv-cache.js';
import { ModelSession, RunError, Tensor } from '../session.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './protocol.js';

const init = workerData as WorkerInit;
const port = parentPort!;
const sessions = new Map<string, { session: ModelSession; pastNames: string[] }>();
/** cache id -> micro-batch group -> segment id -> that graph's KV cache. */
const caches = new Map<number, Array<Map<string, KvCache>>>();

/** A segment's cache layout; its sliding layers' caches are trimmed where the graph takes attention_mask_local. */
function layout(batch: number, session: ModelSession, pastNames: string[], rollback: number): CacheLayout {
  const positionIds = ATTENTION[init.attention].positionIds;
  const w = init.window;
  const local = pastNames.filter((n) => w?.layers.includes(Number(n.split('.')[1])));
  const windowed = w && session.inputNames.includes(io.attentionMaskLocal);
  return {
    ...(windowed ? { window: { names: local, needed: w.size - 1, rollback } } : {}),
    batch,
    kvHeads: init.kvHeads,
    headDim: init.headDim,
    pastNames,
    presentOf: cacheOutputOf,
    positionIds,
    maxPositions: init.maxPositions,
  };
}

/** What a request answers besides ok: a run's output, or a rank's statistics. */
interface Result {
  data?: Float32Array;
  dims?: number[];
  residual?: Float32Array;
  caches?: number;
  windowSlots?: number;
}

async function handle(req: WorkerRequest): Promise<Result> {
  switch (req.op) {
    case 'cache': {
      caches.set(
        req.cache,
        req.groups.map(({ batch, capacity }) => {
          const m = new Map<string, KvCache>();
          for (const [id, { session, pastNames }] of sessions) {
            if (pastNames.length === 0) continue;
            const l = layout(batch, session, pastNames, req.rollback ?? 0);
            m.set(id, createKvCache(defaultCacheKind(init.attention), l, capacity));
          }
          return m;
        }),
      );
      return {};
    }
    case 'run': {
      const { session, pastNames } = sessions.get(req.segment)!;
      const B = req.counts.length;
      const cache = pastNames.length > 0 ? caches.get(req.cache)![req.group]!.get(req.segment)! : null;
      const step = cache ? cache.prepare(req.counts, req.S) : { feeds: {} as Record<string, Tensor>, fetches: undefined };
      const feeds = step.feeds;
      if (req.ids) feeds[io.inputIds] = new Tensor('int64', req.ids, [B, req.S]);
      const dims = (x: Float32Array) => [B, req.S, x.length / (B * req.S)];
      if (req.hidden) feeds[io.hiddenStates] = new Tensor('float32', req.hidden, dims(req.hidden));
      if (req.partialSum) feeds[io.partialSum] = new Tensor('float32', req.partialSum, dims(req.partialSum));
      // The block's share (or logits, or a stage's hidden states); hidden_states_out beside a share is the residual.
      const names = session.outputNames.filter((n) => !isCacheOutput(n));
      const output = names.find((n) => n !== io.hiddenStatesOut) ?? names[0]!;
      const residual = output !== io.hiddenStatesOut && names.includes(io.hiddenStatesOut) ? io.hiddenStatesOut : null;
      // Without preallocated fetches every output comes back (the standard form's presents among them).
      const fetches = step.fetches ? { [output]: null, ...(residual ? { [residual]: null } : {}), ...step.fetches } : undefined;
      const outputs = await session.run(feeds, fetches);
      cache?.commit(outputs, req.counts);
      const t = outputs[output]!;
      return {
        data: t.data as Float32Array,
        dims: [...t.dims],
        ...(residual ? { residual: outputs[residual]!.data as Float32Array } : {}),
      };
    }
    case 'truncate':
      for (const c of caches.get(req.cache)![req.group]!.values()) c.truncate(req.row, req.length);
      return {};
    case 'drop':
      for (const group of caches.get(req.cache) ?? []) for (const c of group.values()) c.release();
      caches.delete(req.cache);
      return {};
    case 'stats': {
      // The most slots any trimmed sliding-layer cache tensor holds now (0 without one).
      let windowSlots = 0;
      for (const group of caches.values())
        for (const m of group)
          for (const [id, c] of m) {
            const { session, pastNames } = sessions.get(id)!;
            const local = new Set(layout(1, session, pastNames, 0).window?.names ?? []);
            for (const [name, t] of c.held()) if (local.has(name)) windowSlots = Math.max(windowSlots, t.dims[2]!);
          }
      return { caches: caches.size, windowSlots };
    }
    case 'close':
      for (const { session } of sessions.values()) await session.release();
      sessions.clear();
      return {};
  }
}

function reply(id: number, result: Promise<Result>): Promise<void> {
  return result.then(
    ({ data, dims, residual, caches: held, windowSlots }) => {
      // Outputs own their buffers: hand them over instead of copying.
      const owned = (x: Float32Array | undefined) => (x && x.byteOffset === 0 && x.byteLength === x.buffer.byteLength ? x : x?.slice());
      const own = owned(data);
      const res = owned(residual);
      const transfer = [own, res].flatMap((x) => (x ? [x.buffer as ArrayBuffer] : []));
      port.postMessage({ id, ok: true, data: own, dims, residual: res, caches: held, windowSlots } satisfies WorkerReply, transfer);
    },
    (e: unknown) => {
      const kind = e instanceof InputError ? 'input' : e instanceof DeviceError ? 'device' : e instanceof RunError ? 'run' : 'internal';
      port.postMessage({ id, ok: false, kind, message: `rank ${init.rank}: ${String((e as Error)?.message ?? e)}` } satisfies WorkerReply);
    },
  );
}

const opened = (async () => {
  for (const s of init.segments)
    sessions.set(s.id, {
      session: await ModelSession.open(s.path, { device: init.device, threads: init.threads, spinning: false }),
      pastNames: s.pastNames,
    });
})();
void reply(
  0,
  opened.then(() => ({})),
);
// Requests run one at a time, in order: a rank's caches change with every run. A failed start is
// reported above; later requests (close) must still be answered.
let queue: Promise<void> = opened.catch(() => undefined);
port.on('message', ({ id, req }: { id: number; req: WorkerRequest }) => {
  queue = queue.then(() => reply(id, handle(req))).catch(() => undefined);
});
