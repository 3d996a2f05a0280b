// Tests of the structural ONNX check (one hand-built graph per rule it enforces), of reading initializers
// with their external data, and that every exported fixture passes the check and loads in onnxruntime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { InputError } from '../../src/core/errors.js';
import { assertGraphValid, checkGraph } from '../../src/formats/onnx/check.js';
import { readOnnxInitializers } from '../../src/formats/onnx/initializers.js';
import { ExternalDataWriter } from '../../src/formats/onnx/external-data.js';
import { Elem, GraphBuilder, MS_DOMAIN, decodeModel, encodeModel, onnx } from '../../src/formats/onnx/graph.js';
import { Checkpoint } from '../../src/formats/safetensors.js';
import { AIDREAMS, GQA, MHA, NEEDS_SHARED, exportedArtifact, tempDir } from '../support.js';

const OPTS = { opset: 17, producerVersion: 'test' };

/** y = Relu(x + w): one input, one initializer, two nodes, one output — valid as built. */
function smallGraph(): GraphBuilder {
  const g = new GraphBuilder(null);
  g.input('x', Elem.FLOAT, [2]);
  const w = g.initializer('w', Elem.FLOAT, [2], new Uint8Array(new Float32Array([1, 2]).buffer));
  const sum = g.op('Add', ['x', w], '/add');
  g.node('Relu', [sum], { name: '/relu', outputs: ['y'] });
  g.output('y', Elem.FLOAT, [2]);
  return g;
}

function problemsOf(g: GraphBuilder): string[] {
  return checkGraph(encodeModel(g, 'test', OPTS)).problems;
}

function assertOneProblem(problems: string[], pattern: RegExp): void {
  assert.equal(problems.length, 1, `expected one problem, got:\n${problems.join('\n')}`);
  assert.match(problems[0]!, pattern);
}

test('a well-formed graph has no problems, from bytes or from a decoded model', () => {
  const bytes = encodeModel(smallGraph(), 'test', OPTS);
  assert.deepEqual(checkGraph(bytes), { nodes: 2, initializers: 1, problems: [] });
  assert.deepEqual(checkGraph(decodeModel(bytes)).problems, []);
  assert.equal(assertGraphValid(bytes).nodes, 2);
});

test('nodes out of topological order are reported as such', () => {
  const g = smallGraph();
  g.nodes.reverse();
  assertOneProblem(problemsOf(g), /"\/relu" \(Relu\) reads "\/add\/output_0" before node #1 produces it .*topological/);
});

test('a node input nothing produces is reported', () => {
  const g = smallGraph();
  g.op('Neg', ['missing'], '/neg');
  g.output('/neg/output_0', Elem.FLOAT, [2]);
  assertOneProblem(problemsOf(g), /"\/neg" \(Neg\) reads "missing", which no graph input, initializer or earlier node produces/);
});

test('empty input names (omitted optional inputs) are not references', () => {
  const g = smallGraph();
  g.op('Clip', ['y', '', ''], '/clip');
  g.output('/clip/output_0', Elem.FLOAT, [2]);
  assert.deepEqual(problemsOf(g), []);
});

test('a graph output nothing produces is reported', () => {
  const g = smallGraph();
  g.output('z', Elem.FLOAT, [2]);
  assertOneProblem(problemsOf(g), /graph output "z" is not produced/);
});

test('an unused initializer is reported, unless allowed', () => {
  const g = smallGraph();
  g.constant('/const/unused', Elem.INT64, [1], [3]);
  const bytes = encodeModel(g, 'test', OPTS);
  assertOneProblem(checkGraph(bytes).problems, /initializer "\/const\/unused" is not used/);
  assert.deepEqual(checkGraph(bytes, { allowUnusedInitializers: true }).problems, []);
});

test('an unused graph input is reported, unless allowed', () => {
  const g = smallGraph();
  g.input('position_ids', Elem.INT64, [2]);
  const bytes = encodeModel(g, 'test', OPTS);
  assertOneProblem(checkGraph(bytes).problems, /graph input "position_ids" is not used/);
  assert.deepEqual(checkGraph(bytes, { allowUnusedInputs: true }).problems, []);
});

test('an initializer that is also a graph input is its default, not a duplicate', () => {
  const g = smallGraph();
  g.input('w', Elem.FLOAT, [2]);
  assert.deepEqual(problemsOf(g), []);
});

test('a value defined twice breaks SSA and is reported', () => {
  const g = smallGraph();
  g.node('Neg', ['x'], { name: '/neg', outputs: ['y'] });
  assertOneProblem(problemsOf(g), /"y" is defined twice \(node "\/relu" \(Relu\) and node "\/neg" \(Neg\)\)/);
  const h = smallGraph();
  h.node('Neg', ['y'], { name: '/neg', outputs: ['w'] });
  assertOneProblem(problemsOf(h), /"w" is defined twice \(initializer and node "\/neg"/);
});

test('a node output left empty (an omitted optional output) is not a definition', () => {
  const g = smallGraph();
  g.node('Dropout', ['y'], { name: '/dropout', outputs: ['d', ''] });
  g.node('Dropout', ['d'], { name: '/dropout2', outputs: ['e', ''] });
  g.output('e', Elem.FLOAT, [2]);
  assert.deepEqual(problemsOf(g), []);
});

test('a domain the model does not import is reported', () => {
  const g = smallGraph();
  // Pushed past GraphBuilder.node, which would record the domain for encodeModel's opset_import.
  g.nodes.push({ opType: 'FastGelu', name: '/gelu', domain: MS_DOMAIN, input: ['y'], output: ['z'] });
  g.output('z', Elem.FLOAT, [2]);
  assertOneProblem(problemsOf(g), /"\/gelu" \(FastGelu\) uses domain "com.microsoft", which the model's opset_import does not import/);
  // The same node added through the builder imports its domain, and "ai.onnx" counts as the default domain.
  const ok = smallGraph();
  ok.node('FastGelu', ['y'], { name: '/gelu', outputs: ['z'], domain: MS_DOMAIN });
  ok.nodes.push({ opType: 'Neg', name: '/neg', domain: 'ai.onnx', input: ['z'], output: ['n'] });
  ok.output('n', Elem.FLOAT, [2]);
  assert.deepEqual(problemsOf(ok), []);
});

test('two nodes with one name are reported', () => {
  const g = smallGraph();
  // GraphBuilder refuses this itself, so the node goes in directly.
  g.nodes.push({ opType: 'Neg', name: '/relu', input: ['y'], output: ['z'] });
  g.output('z', Elem.FLOAT, [2]);
  assertOneProblem(problemsOf(g), /node name "\/relu" is used by more than one node/);
});

test('subgraphs may read outer values, which then count as used', () => {
  const g = smallGraph();
  g.input('cond', Elem.BOOL, []);
  const branch = (op: string): onnxProto.onnx.IGraphProto => ({
    name: op,
    node: [{ opType: op, name: `/${op}`, input: ['y'], output: [`${op}_out`] }],
    output: [{ name: `${op}_out` }],
  });
  const T = onnx.AttributeProto.AttributeType;
  g.nodes.push({
    opType: 'If',
    name: '/if',
    input: ['cond'],
    output: ['picked'],
    attribute: [
      { name: 'then_branch', type: T.GRAPH, g: branch('Neg') },
      { name: 'else_branch', type: T.GRAPH, g: branch('Abs') },
    ],
  });
  g.output('picked', Elem.FLOAT, [2]);
  assert.deepEqual(problemsOf(g), []);
  // A subgraph reading a value nobody defines is reported with its place.
  (g.nodes[2]!.attribute![0]!.g!.node![0]!.input as string[])[0] = 'nowhere';
  assertOneProblem(problemsOf(g), /\/if" \(If\)\.then_branch: node "\/Neg" \(Neg\) reads "nowhere"/);
});

test('assertGraphValid lists every problem; undecodable bytes are an InputError', () => {
  const g = smallGraph();
  g.output('z', Elem.FLOAT, [2]);
  g.input('unused', Elem.FLOAT, [2]);
  assert.throws(
    () => assertGraphValid(encodeModel(g, 'test', OPTS)),
    (e: Error) => {
      assert.match(e.message, /2 structural problem/);
      assert.match(e.message, /graph output "z" is not produced/);
      assert.match(e.message, /graph input "unused" is not used/);
      return true;
    },
  );
  assert.throws(() => checkGraph(new Uint8Array([0xff, 0xff, 0xff, 0xff])), InputError);
});

test('readOnnxInitializers reads external and in-line data and refuses bad locations', async () => {
  const dir = tempDir();
  const big = new Float32Array(512).map((_, i) => i / 7);
  const writeModel = async (location: string): Promise<string> => {
    const data = new ExternalDataWriter(join(dir, 'model.onnx.data'), location);
    const g = new GraphBuilder(data);
    g.input('x', Elem.FLOAT, [512]);
    const w = g.initializer('big', Elem.FLOAT, [512], new Uint8Array(big.buffer));
    const s = g.initializer('small', Elem.FLOAT, [2], new Uint8Array(new Float32Array([5, 6]).buffer));
    g.node('Add', [g.op('Mul', ['x', w], '/mul'), g.constant('/const/k', Elem.INT64, [1], [0])], { name: '/add', outputs: ['y'] });
    g.output(g.op('Sum', ['y', s], '/sum'), Elem.FLOAT, [512]);
    data.close();
    await fs.writeFile(join(dir, 'model.onnx'), encodeModel(g, 'test', OPTS));
    return join(dir, 'model.onnx');
  };
  const inits = await readOnnxInitializers(await writeModel('model.onnx.data'));
  assert.deepEqual(
    inits.map(({ name, elemType, dims, byteLength, external }) => ({ name, elemType, dims, byteLength, external })),
    [
      { name: 'big', elemType: Elem.FLOAT, dims: [512], byteLength: 2048, external: true },
      { name: 'small', elemType: Elem.FLOAT, dims: [2], byteLength: 8, external: false },
      { name: '/const/k', elemType: Elem.INT64, dims: [1], byteLength: 8, external: false },
    ],
  );
  assert.deepEqual(new Float32Array((await inits[0]!.read()).buffer), big);
  assert.deepEqual(new Float32Array((await inits[1]!.read()).buffer), new Float32Array([5, 6]));

  await assert.rejects(readOnnxInitializers(await writeModel('../elsewhere.data')), /outside the model's folder/);
  await writeModel('model.onnx.data');
  await fs.truncate(join(dir, 'model.onnx.data'), 1000);
  await assert.rejects(
    readOnnxInitializers(join(dir, 'model.onnx')),
    (e: Error) => e instanceof InputError && /runs past the end/.test(e.message),
  );
  await assert.rejects(readOnnxInitializers(join(dir, 'absent.onnx')), InputError);
});

for (const [name, source] of [
  ['tiny-llama-mha', MHA],
  ['tiny-llama-gqa', GQA],
] as const) {
  for (const attention of ['fused', 'standard', 'inplace'] as const) {
    test(`${name} exported with ${attention} attention passes the check and loads in onnxruntime`, async () => {
      const modelPath = join(await exportedArtifact(source, attention), 'model.onnx');
      const report = checkGraph(await fs.readFile(modelPath));
      assert.deepEqual(report.problems, []);
      assert.ok(report.nodes > 0 && report.initializers > 0);
      const session = await ort.InferenceSession.create(modelPath);
      assert.ok(session.inputNames.includes('input_ids'));
      assert.ok(session.outputNames.includes('logits'));
      await session.release();
    });
  }
}

test('initializers of an exported model hold the checkpoint weights (transposed for MatMul)', async () => {
  const modelPath = join(await exportedArtifact(GQA, 'standard'), 'model.onnx');
  const byName = new Map((await readOnnxInitializers(modelPath)).map((t) => [t.name, t]));
  const ckpt = await Checkpoint.open(GQA);
  try {
    const embed = byName.get('model.embed_tokens.weight')!;
    assert.ok(embed.external);
    assert.deepEqual(new Float32Array((await embed.read()).buffer), await ckpt.readFloat32('model.embed_tokens.weight'));
    const norm = byName.get('model.norm.weight')!; // 48 floats: small enough to sit in-line
    assert.equal(norm.external, false);
    assert.deepEqual(new Float32Array((await norm.read()).buffer), await ckpt.readFloat32('model.norm.weight'));
    const q = byName.get('model.layers.0.self_attn.q_proj.weight')!;
    const [rows, cols] = ckpt.info('model.layers.0.self_attn.q_proj.weight').shape as [number, number];
    assert.deepEqual(q.dims, [cols, rows]);
    const stored = new Float32Array((await q.read()).buffer);
    const original = await ckpt.readFloat32('model.layers.0.self_attn.q_proj.weight');
    assert.equal(stored[1 * rows + 2], original[2 * cols + 1]);
  } finally {
    await ckpt.close();
  }
});

test('aidreams-260k exported with every attention form passes the check', { skip: NEEDS_SHARED }, async () => {
  for (const attention of ['fused', 'standard', 'inplace'] as const) {
    const bytes = await fs.readFile(join(await exportedArtifact(AIDREAMS, attention), 'model.onnx'));
    assert.deepEqual(checkGraph(bytes).problems, [], attention);
  }
});
