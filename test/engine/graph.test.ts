// The frozen-graph path (src/engine/graph/): graph outputs match eager ones within 1e-4 * max(1, max|eager|) at
// the cut layer and on the probabilities, for 32 real MNIST digits, on every built-in, every preset and two
// uploaded-style models (one covering every layer class of the coverage table); an uncovered layer keeps a
// model eager and is named; the setting and the backend are respected; compiled graphs are cached on disk
// and shared in the process, and disposing releases them.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { ARCHITECTURES } from '../../src/engine/architectures.js'
import { selectBackend } from '../../src/engine/backend.js'
import { ensureBuiltinModelDir } from '../../src/engine/builtin-models.js'
import { forwardRows, frozenForward, GRAPH_TOLERANCE, savedModelSha256 } from '../../src/engine/graph/forward.js'
import { GRAPH_LAYERS } from '../../src/engine/graph/layers.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { loadModel, readMetadata, saveModel } from '../../src/engine/model-io.js'
import type { GraphSettings } from '../../src/engine/protocol.js'
import type { LayersModel, SymbolicTensor, Tensor, Tf } from '../../src/engine/tf.js'

let tf: Tf
let work: string
let settings: GraphSettings
/** 32 real MNIST digits (test split), [32, 28, 28] bytes */
const digits = loadMnist('test', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 32)

before(async () => {
  ;({ tf } = await selectBackend('tensorflow'))
  work = await mkdtemp(path.join(tmpdir(), 'refit-graph-'))
  settings = { mode: 'auto', cacheDir: path.join(work, 'graphs'), cacheBytes: 1024 ** 3 }
})
after(async () => {
  await rm(work, { recursive: true, force: true })
})

/** The digits as model input of `shape` ([h, w, c] resized bilinearly, or flat), scaled to [0, 1]. */
function inputs(shape: number[]): Tensor {
  return tf.tidy(() => {
    const x = tf.div(tf.tensor4d(Float32Array.from(digits.x), [32, 28, 28, 1]), 255) as Tensor
    if (shape.length !== 3) return tf.reshape(x, [32, ...shape])
    const [h, w, c] = shape
    const resized = h === 28 && w === 28 ? x : tf.image.resizeBilinear(x as never, [h, w])
    return c === 3 ? tf.tile(resized, [1, 1, 1, 3]) : resized
  })
}

/**
 * Graph vs eager at each of `cuts` (null: the model's output) on the 32 digits; one eager pass computes every
 * cut's reference. Returns each graph's reason.
 */
async function compare(model: LayersModel, inputShape: number[], cuts: (string | null)[]) {
  const x = inputs(inputShape)
  const outs = cuts.map((c) => (c ? (model.getLayer(c).output as SymbolicTensor) : model.outputs[0]))
  const refs = tf.model({ inputs: model.inputs, outputs: outs }).predict(x) as Tensor | Tensor[]
  const eagers = await Promise.all(
    (Array.isArray(refs) ? refs : [refs]).map(async (t) => (await t.data()) as Float32Array),
  )
  tf.dispose(refs)
  const reasons: string[] = []
  for (const [i, cut] of cuts.entries()) {
    const where = `${model.name} at ${cut ?? 'output'}`
    const f = await frozenForward(tf, { model, cutLayer: cut, backend: 'tensorflow', settings })
    try {
      assert.equal(f.path, 'graph', `${where}: ${f.reason}`)
      const graph = await forwardRows(f, 32, 16, (s, e) => tf.slice(x, s, e - s))
      const eager = eagers[i]
      assert.ok(graph)
      assert.equal(graph.length, eager.length)
      let diff = 0
      let scale = 1
      for (let j = 0; j < eager.length; j++) {
        diff = Math.max(diff, Math.abs(graph[j] - eager[j]))
        scale = Math.max(scale, Math.abs(eager[j]))
      }
      assert.ok(
        diff <= GRAPH_TOLERANCE * scale,
        `${where}: max |graph - eager| ${diff} > ${GRAPH_TOLERANCE} * ${scale}`,
      )
      // not all zeros: the comparison means something
      assert.ok(
        eager.some((v) => v !== 0),
        `${where}: eager output is all zeros`,
      )
      reasons.push(f.reason)
    } finally {
      f.dispose()
    }
  }
  x.dispose()
  return reasons
}

test('built-ins: graph == eager at the feature layer and on probabilities', async () => {
  for (const id of ['mnist-cnn', 'mobilenet-v2', 'inception-v3'] as const) {
    const dir = await ensureBuiltinModelDir(id, path.join(work, 'models'))
    const meta = await readMetadata(dir)
    const model = await loadModel(tf, dir)
    try {
      const reasons = await compare(model, meta.input_shape, [meta.feature_layer, null])
      assert.match(reasons[1], /compiled/)
    } finally {
      model.dispose()
    }
  }
})

test('presets: graph == eager on probabilities and at the flatten layer', async () => {
  for (const arch of ARCHITECTURES) {
    const model = arch.build(tf, [28, 28, 1], 10, 11)
    try {
      await compare(model, [28, 28, 1], ['flatten', null])
    } finally {
      model.dispose()
    }
  }
})

/**
 * An uploaded-style functional model using every covered layer class (Keras names), saved and loaded the way
 * an uploaded model directory is; BatchNorm gets non-trivial moving statistics.
 */
function everyLayerModel(): LayersModel {
  const L = tf.layers
  let seed = 100
  const k = () => tf.initializers.glorotUniform({ seed: ++seed })
  const input = tf.input({ shape: [28, 28, 1], name: 'image' })
  const apply = (layer: { apply: (x: never) => unknown }, x: SymbolicTensor | SymbolicTensor[]) =>
    layer.apply(x as never) as SymbolicTensor
  let x = apply(L.rescaling({ scale: 2, offset: -1, name: 'rescale' }), input)
  x = apply(
    L.zeroPadding2d({
      padding: [
        [1, 0],
        [0, 1],
      ],
      name: 'pad',
    }),
    x,
  )
  x = apply(
    L.conv2d({ filters: 8, kernelSize: 3, strides: 2, activation: 'elu', kernelInitializer: k(), name: 'c1' }),
    x,
  )
  const bn = L.batchNormalization({ name: 'bn', epsilon: 1e-3 })
  x = apply(bn, x)
  x = apply(L.reLU({ maxValue: 6, name: 'relu6' }), x)
  const a = apply(
    L.depthwiseConv2d({
      kernelSize: 3,
      padding: 'same',
      depthMultiplier: 2,
      depthwiseInitializer: k(),
      useBias: true,
      biasInitializer: 'ones',
      activation: 'selu',
      name: 'dw',
    }),
    x,
  )
  const b = apply(
    L.separableConv2d({
      filters: 16,
      kernelSize: 3,
      padding: 'same',
      depthwiseInitializer: k(),
      pointwiseInitializer: k(),
      activation: 'swish',
      name: 'sep',
    }),
    x,
  )
  let y = apply(L.add({ name: 'add' }), [a, b])
  y = apply(L.multiply({ name: 'mul' }), [y, apply(L.activation({ activation: 'sigmoid', name: 'gate' }), y)])
  y = apply(L.concatenate({ name: 'concat' }), [y, apply(L.activation({ activation: 'tanh', name: 'tanh' }), a)])
  y = apply(L.leakyReLU({ alpha: 0.2, name: 'leaky' }), y)
  y = apply(L.reLU({ maxValue: 3, name: 'relu3' }), y)
  const mp = apply(L.maxPooling2d({ poolSize: 2, name: 'maxpool' }), y)
  const ap = apply(L.averagePooling2d({ poolSize: 3, strides: 1, padding: 'same', name: 'avgpool' }), mp)
  const g1 = apply(L.globalAveragePooling2d({ name: 'gap' }), ap)
  const g2 = apply(L.globalMaxPooling2d({ name: 'gmp' }), mp)
  const flat = apply(
    L.flatten({ name: 'flatten' }),
    apply(L.reshape({ targetShape: [7 * 7, 32], name: 'reshape' }), mp),
  )
  let z = apply(L.concatenate({ name: 'features' }), [g1, g2, flat])
  z = apply(L.dense({ units: 32, activation: 'relu6', kernelInitializer: k(), name: 'd1' }), z)
  z = apply(L.dropout({ rate: 0.5, name: 'drop' }), z)
  z = apply(L.dense({ units: 10, kernelInitializer: k(), name: 'logits' }), z)
  const out = apply(L.softmax({ name: 'probs' }), z)
  const model = tf.model({ inputs: input, outputs: out, name: 'every_layer' })
  // moving statistics far from 0/1, so the folded scale and offset are exercised
  const [gamma, beta, mean, variance] = bn.getWeights()
  bn.setWeights([
    tf.randomUniform(gamma.shape, 0.5, 1.5, 'float32', 1),
    tf.randomUniform(beta.shape, -0.5, 0.5, 'float32', 2),
    tf.randomUniform(mean.shape, -0.3, 0.3, 'float32', 3),
    tf.randomUniform(variance.shape, 0.2, 2, 'float32', 4),
  ])
  return model
}

test('an uploaded model using every covered layer class, and the upload test model: graph == eager', async () => {
  const built = everyLayerModel()
  const dir = path.join(work, 'uploaded-every-layer')
  await saveModel(tf, built, dir)
  built.dispose()
  const model = await loadModel(tf, dir)
  const used = new Set(model.layers.map((l) => l.getClassName()))
  try {
    await compare(model, [28, 28, 1], ['features', null])
  } finally {
    model.dispose()
  }
  // every class of the coverage table except the inference-time identities is exercised here
  const identities = [
    'RefitDropout',
    'SpatialDropout1D',
    'SpatialDropout2D',
    'GaussianNoise',
    'GaussianDropout',
    'AlphaDropout',
  ]
  const missing = Object.keys(GRAPH_LAYERS).filter((c) => !used.has(c) && !identities.includes(c))
  assert.deepEqual(missing, [])

  // the tabular model test/routes/model-upload.test.ts uploads (sequential dense stack)
  const mlp = tf.sequential({
    layers: [
      tf.layers.dense({
        units: 8,
        inputShape: [784],
        activation: 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
        biasInitializer: tf.initializers.randomUniform({ seed: 3 }),
      }),
      tf.layers.dense({
        units: 3,
        activation: 'softmax',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
      }),
    ],
  })
  try {
    await compare(mlp, [784], [null])
  } finally {
    mlp.dispose()
  }
})

test('an uncovered layer keeps the model eager and names it; off and non-tensorflow backends are eager', async () => {
  const input = tf.input({ shape: [28, 28, 1] })
  const c = tf.layers.conv2d({ filters: 4, kernelSize: 3, name: 'conv' }).apply(input) as SymbolicTensor
  const ln = tf.layers.layerNormalization({ name: 'norm' }).apply(c) as SymbolicTensor
  const out = tf.layers.globalAveragePooling2d({ name: 'gap' }).apply(ln) as SymbolicTensor
  const model = tf.model({ inputs: input, outputs: out })
  const x = inputs([28, 28, 1])
  try {
    const f = await frozenForward(tf, { model, backend: 'tensorflow', settings })
    assert.equal(f.path, 'eager')
    assert.equal(f.layer, 'norm')
    assert.match(f.reason, /layer "norm" \(LayerNormalization\)/)
    assert.equal(f.bytes, 0)
    // the eager path computes what predict computes
    const y = f.apply(x)
    const e = model.predict(x) as Tensor
    assert.equal(tf.max(tf.abs(tf.sub(y, e))).dataSync()[0], 0)
    tf.dispose([y, e])
    // below the uncovered layer, the graph path applies
    const below = await frozenForward(tf, { model, cutLayer: 'conv', backend: 'tensorflow', settings })
    assert.equal(below.path, 'graph')
    below.dispose()

    const off = await frozenForward(tf, { model, backend: 'tensorflow', settings: { ...settings, mode: 'off' } })
    assert.equal(off.path, 'eager')
    assert.equal(off.reason, 'REFIT_FROZEN_GRAPH=off')
    const wasm = await frozenForward(tf, { model, cutLayer: 'conv', backend: 'wasm', settings })
    assert.equal(wasm.path, 'eager')
    assert.match(wasm.reason, /backend wasm/)
  } finally {
    x.dispose()
    model.dispose()
  }
})

test('compiled graphs: on disk by content, shared in the process, released by dispose, no tensor leak', async () => {
  const dir = await ensureBuiltinModelDir('mnist-cnn', path.join(work, 'models'))
  const model = await loadModel(tf, dir)
  const cacheDir = path.join(work, 'graphs-cache-test')
  const s: GraphSettings = { mode: 'auto', cacheDir, cacheBytes: 1024 ** 3 }
  const x = inputs([28, 28, 1])
  try {
    const a = await frozenForward(tf, { model, cutLayer: 'flatten', backend: 'tensorflow', settings: s })
    assert.equal(a.reason, 'compiled')
    assert.ok(a.bytes > 0)
    const entries = await readdir(cacheDir)
    assert.deepEqual(entries, [a.contentSha256])
    assert.equal(await savedModelSha256(path.join(cacheDir, entries[0])), a.compiledSha256)
    const b = await frozenForward(tf, { model, cutLayer: 'flatten', backend: 'tensorflow', settings: s })
    assert.equal(b.reason, 'compiled graph shared in this process')
    assert.equal(b.contentSha256, a.contentSha256)
    a.dispose()
    b.dispose()
    assert.equal(a.bytes, 0)
    // a new session (as in another process) loads the graph from the disk cache
    const c = await frozenForward(tf, { model, cutLayer: 'flatten', backend: 'tensorflow', settings: s })
    assert.equal(c.reason, 'compiled graph from the cache')
    const before = tf.memory().numTensors
    for (let i = 0; i < 3; i++) tf.dispose(c.apply(x))
    assert.equal(tf.memory().numTensors, before)
    c.dispose()
    // other weights: another entry; a budget below two graphs keeps only the newest
    const other = await loadModel(tf, dir)
    other.getLayer('conv1').setWeights(
      other
        .getLayer('conv1')
        .getWeights()
        .map((w) => tf.mul(w, 2)),
    )
    const d = await frozenForward(tf, {
      model: other,
      cutLayer: 'flatten',
      backend: 'tensorflow',
      settings: { ...s, cacheBytes: c.bytes + 1 },
    })
    assert.notEqual(d.contentSha256, a.contentSha256)
    assert.deepEqual(await readdir(cacheDir), [d.contentSha256])
    d.dispose()
    other.dispose()
    // without a cache directory, nothing stays on disk
    const e = await frozenForward(tf, {
      model,
      cutLayer: 'flatten',
      backend: 'tensorflow',
      settings: { mode: 'auto', cacheDir: null, cacheBytes: 0 },
    })
    assert.equal(e.path, 'graph')
    e.dispose()
    await new Promise((r) => setTimeout(r, 100))
    assert.equal(existsSync(path.join(tmpdir(), `refit-graphs-${process.pid}`, e.contentSha256!)), false)
  } finally {
    x.dispose()
    model.dispose()
  }
})
