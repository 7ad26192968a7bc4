// TF.js graph models on the graph path (src/engine/graph/graph-model.ts): nsfwjs's bundled graph model
// (dist/models/mobilenet_v2_mid, made by tensorflowjs_converter, uint8-quantized, with the TF.js-only fused ops)
// becomes a frozen SavedModel of TensorFlow ops only that tfjs-node's session runs, and agrees with stock
// tf.loadGraphModel at the default feature node and at the output on real digits; a fused form without a
// rewrite is refused naming its node.
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { nsfwModelFiles } from '../../src/engine/builtin-models.js'
import { GRAPH_TOLERANCE } from '../../src/engine/graph/forward.js'
import {
  type GraphModelJson,
  graphModelSavedModel,
  inspectGraphModel,
  isGraphModelProblem,
} from '../../src/engine/graph/graph-model.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'

const require = createRequire(import.meta.url)
type TfNode = typeof import('@tensorflow/tfjs-node')
const tf: TfNode = require('@tensorflow/tfjs-node')
const pb = require('@tensorflow/tfjs-node/dist/proto/api_pb.js')

let work: string
const { modelJson, weights: weightBuf } = nsfwModelFiles('mobilenet_v2_mid')
const json = modelJson as GraphModelJson
const weights = weightBuf.buffer.slice(weightBuf.byteOffset, weightBuf.byteOffset + weightBuf.byteLength) as ArrayBuffer

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'refit-graph-model-'))
})
after(async () => {
  await rm(work, { recursive: true, force: true })
})

test('nsfwjs mobilenet_v2_mid: input, output and feature node; converted graph == tf.loadGraphModel', async () => {
  const info = inspectGraphModel(json)
  assert.ok(!isGraphModelProblem(info), JSON.stringify(info))
  assert.deepEqual(info.input, { name: 'input', shape: [224, 224, 3] })
  assert.equal(info.output, 'Identity')
  assert.match(info.featureNode ?? '', /feature_vector\/SpatialSqueeze$/)
  const sourceOps = new Set(json.modelTopology.node.map((n) => n.op))
  for (const op of ['_FusedConv2D', 'FusedDepthwiseConv2dNative', '_FusedMatMul']) assert.ok(sourceOps.has(op), op)

  // 8 real digits, resized to 224x224 RGB in [0, 1] (what nsfwjs feeds it)
  const digits = loadMnist('test', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 8)
  const x = tf.tidy(() => {
    const raw = tf.div(
      tf.tensor4d(Float32Array.from(digits.x), [8, 28, 28, 1]),
      255,
    ) as import('@tensorflow/tfjs-node').Tensor4D
    return tf.tile(tf.image.resizeBilinear(raw, [224, 224]), [1, 1, 1, 3])
  })
  const stock = await tf.loadGraphModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology as never,
      weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
      weightData: weights,
    }),
  )
  for (const [name, node, width] of [
    ['features', info.featureNode!, 1792],
    ['output', info.output, 5],
  ] as const) {
    const ref = stock.execute(x, node) as import('@tensorflow/tfjs-node').Tensor
    assert.deepEqual(ref.shape, [8, width])
    const bytes = graphModelSavedModel(tf as never, json, weights, { output: node, outputShape: [width] })
    // only TensorFlow ops are left
    const ops = new Set<string>(
      pb.SavedModel.deserializeBinary(bytes)
        .getMetaGraphsList()[0]
        .getGraphDef()
        .getNodeList()
        .map((n: { getOp(): string }) => n.getOp()),
    )
    for (const op of ops) assert.ok(!op.startsWith('_') && !op.startsWith('Fused'), `${name}: ${op} left in the graph`)
    assert.ok(ops.has('DepthwiseConv2dNative') && ops.has('Conv2D'), [...ops].join(','))
    if (name === 'features') assert.ok(!ops.has('MatMul') && !ops.has('Softmax'), 'the head is cut off')
    const dir = path.join(work, name)
    await mkdir(path.join(dir, 'variables'), { recursive: true })
    await writeFile(path.join(dir, 'saved_model.pb'), bytes)
    const session = await tf.node.loadSavedModel(dir, ['serve'], 'serving_default')
    const y = session.predict(x) as import('@tensorflow/tfjs-node').Tensor
    const [diff, scale] = tf.tidy(() => [
      tf.max(tf.abs(tf.sub(y, ref))).dataSync()[0],
      Math.max(1, tf.max(tf.abs(ref)).dataSync()[0]),
    ])
    assert.ok(
      diff <= GRAPH_TOLERANCE * scale,
      `${name}: max |converted - stock| ${diff} > ${GRAPH_TOLERANCE} * ${scale}`,
    )
    assert.ok(
      ref.dataSync().some((v) => v !== 0),
      `${name}: all zeros`,
    )
    console.log(`graph model ${name}: max |converted - tf.loadGraphModel| = ${diff}`)
    tf.dispose([y, ref])
    session.dispose()
  }
  stock.dispose()
  x.dispose()
})

test('a fused form without a TensorFlow rewrite is refused naming its node and op', () => {
  const nodes = structuredClone(json.modelTopology.node)
  const victim = nodes.find((n) => n.op === 'FusedDepthwiseConv2dNative')!
  victim.attr!.fused_ops = { list: { s: ['BiasAdd', 'Prelu'].map((s) => Buffer.from(s).toString('base64')) } }
  victim.attr!.num_args = { i: '2' }
  const problem = inspectGraphModel({ ...json, modelTopology: { ...json.modelTopology, node: nodes } })
  assert.ok(isGraphModelProblem(problem))
  assert.equal(problem.node, victim.name)
  assert.equal(problem.op, 'FusedDepthwiseConv2dNative')
  assert.match(problem.reason, /\[BiasAdd, Prelu\]/)
})
