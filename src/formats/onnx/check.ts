// Structural checks of an ONNX model that llmopt can run without onnxruntime: SSA names, topological
// order, dangling or unused values, opset imports.
import type onnxProto from 'onnx-proto';
import { InputError } from '../../core/errors.js';
import { decodeModel } from './graph.js';

type ModelProto = onnxProto.onnx.IModelProto;
type GraphProto = onnxProto.onnx.IGraphProto;

/** What {@link checkGraph} may tolerate. */
export interface CheckOptions {
  /** Graph inputs no node reads are not reported (some runtimes feed inputs a graph ignores). */
  allowUnusedInputs?: boolean;
  /** Initializers no node reads are not reported. */
  allowUnusedInitializers?: boolean;
}

/** Result of {@link checkGraph}: sizes of the main graph and every problem found (empty when valid). */
export interface GraphCheckReport {
  nodes: number;
  initializers: number;
  problems: string[];
}

// "ai.onnx" and "" name the same default domain.
function normalDomain(domain: string | null | undefined): string {
  return !domain || domain === 'ai.onnx' ? '' : domain;
}

function describe(node: onnxProto.onnx.INodeProto, index: number): string {
  return `node ${node.name ? `"${node.name}"` : `#${index}`} (${node.opType ?? '?'})`;
}

/** What every graph of one model is checked against, and where problems go. */
interface Scope {
  problems: string[];
  imported: Set<string>;
  opts: CheckOptions;
}

/**
 * Checks one graph against the names visible from enclosing graphs (`outer`); returns the outer names it reads,
 * so the enclosing graph counts them as used.
 */
function checkScope(graph: GraphProto, outer: ReadonlySet<string>, where: string, scope: Scope, topLevel: boolean): Set<string> {
  const { problems } = scope;
  const readsOuter = new Set<string>();
  const defined = new Map<string, string>(); // name -> what defines it, for SSA messages
  const used = new Set<string>();
  const define = (name: string, what: string): void => {
    const earlier = defined.get(name);
    if (earlier !== undefined) problems.push(`${where}: "${name}" is defined twice (${earlier} and ${what})`);
    else if (outer.has(name)) problems.push(`${where}: ${what} "${name}" shadows a value of an enclosing graph`);
    else defined.set(name, what);
  };

  const inputNames = new Set<string>();
  for (const input of graph.input ?? []) {
    const name = input.name ?? '';
    if (name === '') problems.push(`${where}: a graph input has no name`);
    else if (inputNames.has(name)) problems.push(`${where}: graph input "${name}" is listed twice`);
    else {
      inputNames.add(name);
      define(name, 'graph input');
    }
  }
  const initializerNames: string[] = [];
  const sparse = (graph.sparseInitializer ?? []).map((s) => s.values?.name ?? '');
  for (const name of [...(graph.initializer ?? []).map((t) => t.name ?? ''), ...sparse]) {
    if (name === '') {
      problems.push(`${where}: an initializer has no name`);
      continue;
    }
    initializerNames.push(name);
    // An initializer may share its name with a graph input: it is then that input's default value.
    if (!inputNames.has(name)) define(name, 'initializer');
  }

  // Every producer up front, so an input read before its producer can be told from one never produced.
  const producerIndex = new Map<string, number>();
  (graph.node ?? []).forEach((node, i) => {
    for (const out of node.output ?? []) if (out && !producerIndex.has(out)) producerIndex.set(out, i);
  });

  const nodeNames = new Set<string>();
  const read = (name: string, reader: string, index: number): void => {
    if (defined.has(name)) used.add(name);
    else if (outer.has(name)) readsOuter.add(name);
    else {
      const later = producerIndex.get(name);
      if (later !== undefined && later >= index) {
        problems.push(`${where}: ${reader} reads "${name}" before node #${later} produces it (nodes are not in topological order)`);
      } else {
        problems.push(`${where}: ${reader} reads "${name}", which no graph input, initializer or earlier node produces`);
      }
    }
  };

  (graph.node ?? []).forEach((node, i) => {
    const what = describe(node, i);
    if (!node.opType) problems.push(`${where}: ${what} has no op_type`);
    if (node.name) {
      if (nodeNames.has(node.name)) problems.push(`${where}: node name "${node.name}" is used by more than one node`);
      nodeNames.add(node.name);
    }
    const domain = normalDomain(node.domain);
    if (!scope.imported.has(domain)) {
      problems.push(`${where}: ${what} uses domain "${domain || 'ai.onnx'}", which the model's opset_import does not import`);
    }
    for (const name of node.input ?? []) if (name) read(name, what, i);
    // Subgraphs (If/Loop/Scan bodies) may read any value defined so far in this graph or an enclosing one.
    for (const attr of node.attribute ?? []) {
      const subgraphs = [...(attr.g ? [attr.g] : []), ...(attr.graphs ?? [])];
      for (const sub of subgraphs) {
        const visible = new Set([...outer, ...defined.keys()]);
        for (const name of checkScope(sub, visible, `${where} > ${what}.${attr.name ?? '?'}`, scope, false)) read(name, what, i);
      }
    }
    for (const name of node.output ?? []) if (name) define(name, what);
  });

  const outputNames = new Set<string>();
  for (const output of graph.output ?? []) {
    const name = output.name ?? '';
    if (name === '') {
      problems.push(`${where}: a graph output has no name`);
      continue;
    }
    if (outputNames.has(name)) problems.push(`${where}: graph output "${name}" is listed twice`);
    outputNames.add(name);
    if (defined.has(name)) used.add(name);
    else if (outer.has(name)) readsOuter.add(name);
    else problems.push(`${where}: graph output "${name}" is not produced by any node, graph input or initializer`);
  }

  if (!scope.opts.allowUnusedInitializers) {
    for (const name of initializerNames) if (!used.has(name)) problems.push(`${where}: initializer "${name}" is not used`);
  }
  // Loop and Scan bodies must declare inputs they may not need, so only the main graph's inputs must be used.
  if (topLevel && !scope.opts.allowUnusedInputs) {
    const initializers = new Set(initializerNames);
    for (const name of inputNames) {
      if (!used.has(name) && !initializers.has(name)) problems.push(`${where}: graph input "${name}" is not used`);
    }
  }
  return readsOuter;
}

function asModel(model: ModelProto | Uint8Array): ModelProto {
  if (!(model instanceof Uint8Array)) return model;
  try {
    return decodeModel(model);
  } catch (error) {
    throw new InputError(`not a valid ONNX model (${(error as Error).message})`);
  }
}

/**
 * Structural check of a model: nodes in topological order, every node input produced by a graph input, an
 * initializer or an earlier node, every graph output produced, no unused initializers or graph inputs, every
 * value defined once (SSA), unique node names, and every node's domain imported. Subgraphs are checked too.
 * Accepts a decoded model or the bytes of a model.onnx; throws {@link InputError} only when bytes do not decode.
 */
export function checkGraph(model: ModelProto | Uint8Array, opts: CheckOptions = {}): GraphCheckReport {
  const m = asModel(model);
  const graph = m.graph;
  if (!graph) return { nodes: 0, initializers: 0, problems: ['model has no graph'] };
  const imported = new Set<string>();
  const problems: string[] = [];
  for (const entry of m.opsetImport ?? []) {
    const domain = normalDomain(entry.domain);
    if (imported.has(domain)) problems.push(`opset_import lists domain "${domain || 'ai.onnx'}" twice`);
    imported.add(domain);
  }
  const scope: Scope = { problems, imported, opts };
  checkScope(graph, new Set(), `graph "${graph.name ?? ''}"`, scope, true);
  return { nodes: graph.node?.length ?? 0, initializers: graph.initializer?.length ?? 0, problems };
}

/** Most problems an error message lists before summarising the rest. */
const MAX_LISTED = 20;

/** {@link checkGraph}, throwing an Error that lists the problems when there are any. */
export function assertGraphValid(model: ModelProto | Uint8Array, opts: CheckOptions = {}): GraphCheckReport {
  const report = checkGraph(model, opts);
  const { problems } = report;
  if (problems.length > 0) {
    const listed = problems.slice(0, MAX_LISTED).map((p) => `  - ${p}`);
    if (problems.length > MAX_LISTED) listed.push(`  … and ${problems.length - MAX_LISTED} more`);
    throw new Error(`ONNX graph has ${problems.length} structural problem(s):\n${listed.join('\n')}`);
  }
  return report;
}
