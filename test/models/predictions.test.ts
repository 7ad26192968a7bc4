// POST /v1/models/{id}/predictions on the real PostgreSQL and Redis with real inference processes: results
// equal stock TF.js on identically preprocessed inputs (images through decodeImageToShape, rows through the
// stored standardization), JSON and multipart agree, faults name the input, the API's event loop stays free
// during a large batch, a killed inference process is replaced, and requests stick to the process that
// holds the model.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import sharp from 'sharp'
import yazl from 'yazl'
import { decodeImageToShape } from '../../src/datasets/image.js'
import { builtinModelSourceDir } from '../../src/engine/builtin-models.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { saveModel } from '../../src/engine/model-io.js'
import { preprocessRows, rowRange } from '../../src/engine/preprocess.js'
import { ModelCache } from '../../src/inference/model-cache.js'
import { childThreads, InferencePool } from '../../src/inference/pool.js'
import { bearer, buildTestApp, createProjectKey, createTestEnv, multipart, type TestEnv } from '../helpers/env.js'
import { pngOf } from './helpers.js'

const require = createRequire(import.meta.url)
type TfNode = typeof import('@tensorflow/tfjs-node')
const tf: TfNode = require('@tensorflow/tfjs-node')
type TfTensor = import('@tensorflow/tfjs-node').Tensor

let env: TestEnv
let app: FastifyInstance
let key: string
let projectId: string
let work: string
let tabularId: string
const digits = loadMnist('test', [0, 1, 2, 3, 4], 64)
const STANDARDIZE = { mean: [5.8, 3.0, 3.7, 1.2], std: [0.8, 0.4, 1.7, 0.7] }

const predict = (id: string, payload: object) =>
  app.inject({ method: 'POST', url: `/v1/models/${encodeURIComponent(id)}/predictions`, headers: bearer(key), payload })

before(async () => {
  env = await createTestEnv('models_predict', { INFERENCE_PROCESSES: '2' })
  app = await buildTestApp(env.config)
  ;({ key, projectId } = await createProjectKey(app))
  work = await mkdtemp(join(tmpdir(), 'refit-predict-'))
  tabularId = await uploadTabularModel(true)
})

after(async () => {
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

/** A small 4-feature, 3-class model built here, uploaded through the API. */
async function uploadTabularModel(withClasses: boolean): Promise<string> {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({
        name: 'hidden',
        inputShape: [4],
        units: 8,
        activation: 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
      }),
      tf.layers.dense({
        name: 'out',
        units: 3,
        activation: 'softmax',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
      }),
    ],
  })
  const dir = join(work, `tabular-${randomBytes(3).toString('hex')}`)
  await saveModel(tf as never, model as never, dir)
  model.dispose()
  const zip = new yazl.ZipFile()
  for (const f of ['model.json', 'weights.bin']) zip.addFile(join(dir, f), f)
  zip.end()
  const chunks: Buffer[] = []
  for await (const c of zip.outputStream) chunks.push(c as Buffer)
  const fields: Record<string, string> = {
    input_shape: '[4]',
    preprocessing: '{"scale":2,"offset":0.5}',
    feature_layer: 'hidden',
  }
  if (withClasses) fields.classes = '["setosa","versicolor","virginica"]'
  const body = multipart(fields, { name: 'tabular.zip', content: Buffer.concat(chunks) })
  const res = await app.inject({
    method: 'POST',
    url: '/v1/models',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  assert.equal(res.statusCode, 201, res.body)
  const id = res.json().id as string
  // Store the standardization statistics a tabular training run records, in the row and in metadata.json.
  const row = await app.db.model.findUniqueOrThrow({ where: { id }, include: { artifact: true } })
  const meta = row.metadata as { preprocessing: object }
  const metadata = { ...meta, preprocessing: { ...meta.preprocessing, standardize: STANDARDIZE } }
  await app.db.model.update({ where: { id }, data: { metadata } })
  await writeFile(join(app.storage.workPath(row.artifact!.path), 'metadata.json'), JSON.stringify(metadata))
  return id
}

async function localModel(dir: string) {
  return tf.loadLayersModel(`file://${dir}/model.json`)
}

function probsOf(data: { predictions: { class: string; probability: number }[] }[]) {
  return data.map((d) => Object.fromEntries(d.predictions.map((p) => [p.class, p.probability])))
}

test('images: predictions equal stock TF.js on decodeImageToShape + preprocessRows; multipart agrees', async () => {
  const pngs = await Promise.all(Array.from({ length: 6 }, (_, i) => pngOf(digits, i)))
  // an RGB JPEG at twice the size: resized and converted to gray exactly as a training image would be
  const jpeg = await sharp(await pngOf(digits, 6))
    .resize(56, 56)
    .toColourspace('srgb')
    .jpeg()
    .toBuffer()
  const images = [...pngs, jpeg]
  const res = await predict('mnist-cnn', { inputs: images.map((b) => ({ image: b.toString('base64') })) })
  assert.equal(res.statusCode, 200, res.body)
  const body = res.json()
  assert.equal(body.object, 'list')
  assert.equal(body.model, 'mnist-cnn')
  assert.ok(['tensorflow', 'wasm', 'cpu'].includes(body.backend))
  // the answer says how the model ran: compiled whole on tensorflow, op by op elsewhere
  assert.equal(body.forward, body.backend === 'tensorflow' ? 'graph' : 'eager')
  // Server-Timing: the inference process's work, within the API's round trip to it
  const timing = /^forward;dur=([\d.]+);desc="(graph|eager)", pool;dur=([\d.]+)$/.exec(
    String(res.headers['server-timing']),
  )
  assert.ok(timing, String(res.headers['server-timing']))
  assert.equal(timing[2], body.forward)
  assert.ok(Number(timing[1]) > 0 && Number(timing[1]) <= Number(timing[3]), timing[0])
  assert.deepEqual(
    body.data.map((d: { index: number }) => d.index),
    [0, 1, 2, 3, 4, 5, 6],
  )
  for (const d of body.data) {
    assert.equal(d.predictions.length, 5, 'default top_k: min(5, classes)')
    for (let j = 1; j < d.predictions.length; j++)
      assert.ok(d.predictions[j - 1].probability >= d.predictions[j].probability)
  }

  const dir = builtinModelSourceDir('mnist-cnn')
  const meta = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8'))
  const pixels = new Uint8Array(images.length * 784)
  for (const [i, b] of images.entries()) pixels.set(await decodeImageToShape(b, [28, 28, 1]), i * 784)
  const x = preprocessRows(
    { kind: 'image', x: pixels, sampleShape: [28, 28, 1] },
    rowRange(0, images.length),
    meta.preprocessing,
    [28, 28, 1],
  )
  const model = await localModel(dir)
  const local = tf.tidy(
    () =>
      (
        model.predict(tf.tensor(x, [images.length, 28, 28, 1])) as import('@tensorflow/tfjs-node').Tensor
      ).arraySync() as number[][],
  )
  model.dispose()
  const got = probsOf(body.data)
  for (let i = 0; i < images.length; i++)
    for (const [j, c] of meta.classes.entries())
      assert.ok(Math.abs(got[i][c] - local[i][j]) < 1e-5, `input ${i} class ${c}`)
  // PNGs of the raw test pixels predict what the raw pixels predict: mostly the true digit
  const right = got
    .slice(0, 6)
    .filter((_p, i) => body.data[i].predictions[0].class === digits.classes[digits.y[i]]).length
  assert.ok(right >= 5, `${right}/6 right`)

  // the same images as multipart file parts, with top_k 2
  const boundary = `----refit${randomBytes(6).toString('hex')}`
  const parts: Buffer[] = []
  for (const [i, b] of images.entries())
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="${i}.png"\r\nContent-Type: image/png\r\n\r\n`,
      ),
      b,
      Buffer.from('\r\n'),
    )
  parts.push(
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n2\r\n--${boundary}--\r\n`),
  )
  const mp = await app.inject({
    method: 'POST',
    url: '/v1/models/mnist-cnn/predictions',
    headers: { ...bearer(key), 'content-type': `multipart/form-data; boundary=${boundary}` },
    payload: Buffer.concat(parts),
  })
  assert.equal(mp.statusCode, 200, mp.body)
  for (const [i, d] of mp.json().data.entries()) {
    assert.equal(d.predictions.length, 2)
    assert.deepEqual(d.predictions, body.data[i].predictions.slice(0, 2))
  }
})

test('the inference process runs a covered model as a TensorFlow graph, equal to eager; REFIT_FROZEN_GRAPH=off keeps eager', async () => {
  const images = await Promise.all(Array.from({ length: 8 }, (_, i) => pngOf(digits, i)))
  const dir = builtinModelSourceDir('mnist-cnn')
  const meta = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8'))
  const pixels = new Uint8Array(images.length * 784)
  for (const [i, b] of images.entries()) pixels.set(await decodeImageToShape(b, [28, 28, 1]), i * 784)
  const x = preprocessRows(
    { kind: 'image', x: pixels, sampleShape: [28, 28, 1] },
    rowRange(0, images.length),
    meta.preprocessing,
    [28, 28, 1],
  )
  const model = await localModel(dir)
  const eager = tf.tidy(() => (model.predict(tf.tensor(x, [images.length, 28, 28, 1])) as TfTensor).dataSync())
  model.dispose()
  const bound = 1e-4 * Math.max(1, ...Array.from(eager, Math.abs))
  const maxDiff = (probs: Float32Array) => {
    assert.equal(probs.length, eager.length)
    return Math.max(...Array.from(probs, (v, i) => Math.abs(v - eager[i])))
  }
  const inputs = { kind: 'image' as const, images: images.map((b) => new Uint8Array(b)) }
  const ref = { key: `graph-check@${randomBytes(3).toString('hex')}`, dir }

  const graph = await app.inference.predict(ref, inputs)
  assert.equal(graph.backend, 'tensorflow', 'the graph path needs the tensorflow backend')
  assert.equal(graph.forward, 'graph')
  assert.ok(maxDiff(graph.probs) <= bound, `graph vs eager ${maxDiff(graph.probs)} > ${bound}`)

  const off = new InferencePool({
    processes: 1,
    cacheBytes: env.config.inferenceCacheMb * 1024 * 1024,
    backend: env.config.tfBackend,
    graph: { ...env.config.frozenGraph, mode: 'off' },
    log: { warn() {}, info() {} },
  })
  try {
    const plain = await off.predict(ref, inputs)
    assert.equal(plain.forward, 'eager')
    assert.ok(maxDiff(plain.probs) <= 1e-6, `eager child vs eager ${maxDiff(plain.probs)}`)
  } finally {
    await off.close()
  }
})

test('tabular rows: standardized with the stored statistics, then scaled, exactly as in training', async () => {
  const rows = [
    [5.1, 3.5, 1.4, 0.2],
    [6.7, 3.0, 5.2, 2.3],
    [5.9, 2.8, 4.1, 1.3],
  ]
  const res = await predict(tabularId, { inputs: rows.map((features) => ({ features })), top_k: 3 })
  assert.equal(res.statusCode, 200, res.body)
  const row = await app.db.model.findUniqueOrThrow({ where: { id: tabularId }, include: { artifact: true } })
  const model = await localModel(app.storage.workPath(row.artifact!.path))
  const x = rows.flatMap((r) => r.map((v, j) => ((v - STANDARDIZE.mean[j]) / STANDARDIZE.std[j]) * 2 + 0.5))
  const local = tf.tidy(
    () => (model.predict(tf.tensor(x, [3, 4])) as import('@tensorflow/tfjs-node').Tensor).arraySync() as number[][],
  )
  model.dispose()
  const got = probsOf(res.json().data)
  for (let i = 0; i < 3; i++)
    for (const [j, c] of ['setosa', 'versicolor', 'virginica'].entries())
      assert.ok(Math.abs(got[i][c] - local[i][j]) < 1e-5, `row ${i} class ${c}: ${got[i][c]} vs ${local[i][j]}`)
})

test('faults answer 400 with a catalogue code and details naming the input', async () => {
  const row = (n: number) => ({ features: Array.from({ length: n }, (_, i) => i) })
  let res = await predict(tabularId, { inputs: [row(4), row(4), row(4), row(3)] })
  assert.equal(res.statusCode, 400)
  let err = res.json().error
  assert.equal(err.code, 'invalid_input')
  assert.deepEqual(err.details, [{ field: 'inputs[3].features', message: 'expected 4 numbers, got 3' }])

  res = await predict(tabularId, { inputs: [{ features: [1, 2, 'x', 4] }, { image: 'AAAA' }] })
  err = res.json().error
  assert.deepEqual(
    err.details.map((d: { field: string }) => d.field),
    ['inputs[0].features[2]', 'inputs[1]'],
  )
  assert.match(err.details[1].message, /expected \{"features": \[4 numbers\]\}/)

  res = await predict(tabularId, { inputs: Array.from({ length: 257 }, () => row(4)) })
  assert.equal(res.json().error.code, 'invalid_input')
  assert.match(res.json().error.details[0].message, /at most 256 inputs, got 257/)
  res = await predict(tabularId, { inputs: [] })
  assert.equal(res.json().error.details[0].field, 'inputs')
  res = await predict(tabularId, { inputs: [row(4)], top_k: 4 })
  assert.deepEqual(res.json().error.details, [{ field: 'top_k', message: 'expected an integer from 1 to 3, got 4' }])
  res = await predict(tabularId, { inputs: [row(4)], extra: true })
  assert.equal(res.json().error.details[0].field, 'extra')

  res = await predict('mnist-cnn', {
    inputs: [{ image: 'not base64!' }, { image: Buffer.from('GIF89a').toString('base64') }, row(4)],
  })
  assert.equal(res.statusCode, 400)
  assert.deepEqual(
    res.json().error.details.map((d: { field: string }) => d.field),
    ['inputs[0].image', 'inputs[1].image', 'inputs[2]'],
  )
  assert.match(res.json().error.details[1].message, /expected a PNG or JPEG image/)
  // a PNG header with a broken body is caught by the decoder in the inference process
  const broken = Buffer.concat([(await pngOf(digits, 0)).subarray(0, 40)])
  res = await predict('mnist-cnn', {
    inputs: [{ image: (await pngOf(digits, 0)).toString('base64') }, { image: broken.toString('base64') }],
  })
  assert.equal(res.statusCode, 400, res.body)
  assert.equal(res.json().error.code, 'invalid_input')
  assert.equal(res.json().error.details[0].field, 'inputs[1].image')

  // multipart is for images only
  const mp = multipart({}, { name: 'a.png', content: await pngOf(digits, 0), field: 'image' })
  res = await app.inject({
    method: 'POST',
    url: `/v1/models/${tabularId}/predictions`,
    headers: { ...bearer(key), ...mp.headers },
    payload: mp.payload,
  })
  assert.equal(res.statusCode, 400)
  assert.equal(res.json().error.code, 'invalid_input')

  assert.equal((await predict('no-such-model', { inputs: [row(4)] })).statusCode, 404)
})

test('a model without class names, or an architecture, cannot predict (400 model_not_predictable)', async () => {
  const unlabelled = await uploadTabularModel(false)
  let res = await predict(unlabelled, { inputs: [{ features: [1, 2, 3, 4] }] })
  assert.equal(res.statusCode, 400)
  assert.equal(res.json().error.code, 'model_not_predictable')
  assert.match(res.json().error.message, /no class names/)
  await app.db.model.create({
    data: {
      id: 'arch-test-mlp',
      projectId,
      kind: 'architecture',
      metadata: { input_shape: [4], classes: null, preprocessing: { scale: 1, offset: 0 }, feature_layer: null },
    },
  })
  res = await predict('arch-test-mlp', { inputs: [{ features: [1, 2, 3, 4] }] })
  assert.equal(res.statusCode, 400)
  assert.equal(res.json().error.code, 'model_not_predictable')
  assert.match(res.json().error.message, /architecture/)
})

test('the API event loop stays free: /healthz answers within 100 ms while a 32-image mobilenet-v2 batch predicts', async () => {
  const jpeg = await sharp({ create: { width: 224, height: 224, channels: 3, background: { r: 200, g: 80, b: 30 } } })
    .jpeg()
    .toBuffer()
  const warm = await predict('mobilenet-v2', { inputs: [{ image: jpeg.toString('base64') }] })
  assert.equal(warm.statusCode, 200, warm.body)
  const started = performance.now()
  const big = predict('mobilenet-v2', {
    inputs: Array.from({ length: 32 }, () => ({ image: jpeg.toString('base64') })),
  })
  let done = false
  void big.then(() => {
    done = true
  })
  const latencies: number[] = []
  while (!done) {
    const t0 = performance.now()
    const h = await app.inject({ method: 'GET', url: '/healthz' })
    latencies.push(performance.now() - t0)
    assert.equal(h.statusCode, 200)
    await new Promise((r) => setTimeout(r, 10))
  }
  const res = await big
  const batchMs = performance.now() - started
  assert.equal(res.statusCode, 200)
  assert.equal(res.json().data.length, 32)
  console.log(
    `# mobilenet-v2 batch 32: ${batchMs.toFixed(0)} ms; /healthz ${latencies.length} calls, max ${Math.max(...latencies).toFixed(1)} ms`,
  )
  assert.ok(latencies.length >= 3, 'several health checks ran during the batch')
  assert.ok(Math.max(...latencies) < 100, `max /healthz latency ${Math.max(...latencies)} ms`)
})

test('requests stick to the process holding the model; a killed process is replaced', async () => {
  const input = { inputs: [{ image: (await pngOf(digits, 0)).toString('base64') }] }
  for (let i = 0; i < 4; i++) assert.equal((await predict('mnist-cnn', input)).statusCode, 200)
  const holders = app.inference.holdings().filter((h) => h.includes('mnist-cnn@builtin'))
  assert.equal(holders.length, 1, `one process holds mnist-cnn: ${JSON.stringify(app.inference.holdings())}`)

  const before = app.inference.pids()
  const victim = before.find((p) => p !== null)!
  // the pool shares the cores out among its processes (childThreads)
  const environ = readFileSync(`/proc/${victim}/environ`, 'utf8').split('\0')
  assert.ok(
    environ.includes(`TF_NUM_INTRAOP_THREADS=${childThreads(before.length).TF_NUM_INTRAOP_THREADS}`),
    'intra-op threads set',
  )
  process.kill(victim, 'SIGKILL')
  const res = await predict('mnist-cnn', input)
  assert.equal(res.statusCode, 200, res.body)
  const after = app.inference.pids()
  assert.ok(!after.includes(victim), 'the killed process is gone')
  assert.equal(after.filter((p) => p !== null).length, before.filter((p) => p !== null).length, 'it was replaced')
})

test('ModelCache keeps loaded models within its byte budget, least recently used evicted first, in-use pinned', async () => {
  const disposed: string[] = []
  const cache = new ModelCache(100, async (key) => ({
    key,
    model: { dispose: () => disposed.push(key) } as never,
    meta: {} as never,
    bytes: 40,
  }))
  const use = (k: string) => cache.use(k, '', async () => k)
  await use('a')
  await use('b')
  await use('a') // a is now most recent
  await use('c') // 120 bytes > 100: b goes
  assert.deepEqual(cache.keys(), ['a', 'c'])
  await new Promise((r) => setTimeout(r, 10))
  assert.deepEqual(disposed, ['b'])
  let release!: () => void
  const held = cache.use('a', '', () => new Promise<void>((r) => (release = r)))
  await use('d') // a is in use, so c goes
  assert.deepEqual(cache.keys().sort(), ['a', 'd'])
  release()
  await held
  const huge = new ModelCache(10, async (key) => ({
    key,
    model: { dispose() {} } as never,
    meta: {} as never,
    bytes: 50,
  }))
  await huge.use('x', '', async () => 0)
  assert.deepEqual(huge.keys(), ['x'], 'a model larger than the budget still stays while it is the only one')
})
