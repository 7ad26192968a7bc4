// The model registry on the real PostgreSQL and Redis: filters, lineage, metrics, delete refusals,
// model and checkpoint downloads that stock TF.js loads and that predict what the service predicts, and
// evaluations run by the worker's evaluation processor. The fine-tuned model comes from the real training
// process (600 digits 5-9, 2 epochs), registered as the training processor registers one.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { Worker } from 'bullmq'
import type { FastifyInstance } from 'fastify'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { saveModel } from '../../src/engine/model-io.js'
import { preprocessRows, rowRange } from '../../src/engine/preprocess.js'
import { newId } from '../../src/lib/ids.js'
import { startEvaluationWorker } from '../../workers/evaluation-processor.js'
import { writeCsv, writeIdxZip } from '../engine/helpers.js'
import {
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
  waitFor,
} from '../helpers/env.js'
import { zipBuffer } from '../helpers/memory-fixtures.js'
import { unzipToDir, unzipToMemory } from '../helpers/zip.js'
import { fineTuneMnist, pngOf, registerWholeModelCheckpoint, uploadProcessedFile } from './helpers.js'

const require = createRequire(import.meta.url)
type Tf = typeof import('@tensorflow/tfjs-node')

let env: TestEnv
let app: FastifyInstance
let key: string
let projectId: string
let work: string
let trainFile: string
let ft: Awaited<ReturnType<typeof fineTuneMnist>>
let evaluationWorker: Worker | null = null
const test5to9 = loadMnist('test', [5, 6, 7, 8, 9], 200)

const enc = encodeURIComponent
const get = (url: string) => app.inject({ method: 'GET', url, headers: bearer(key) })
const post = (url: string, payload: object) => app.inject({ method: 'POST', url, headers: bearer(key), payload })

before(async () => {
  env = await createTestEnv('models_registry', { INFERENCE_PROCESSES: '1' })
  app = await buildTestApp(env.config)
  ;({ key, projectId } = await createProjectKey(app))
  work = await mkdtemp(join(tmpdir(), 'refit-registry-'))
  await writeIdxZip(loadMnist('train', [5, 6, 7, 8, 9], 600), join(work, 'train.zip'))
  trainFile = await uploadProcessedFile(app, key, 'train.zip', await readFile(join(work, 'train.zip')))
  ft = await fineTuneMnist(app, projectId, trainFile)
})

after(async () => {
  await evaluationWorker?.close(true)
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

test('GET /v1/models filters by kind, base_model and job', async () => {
  const all = (await get('/v1/models?limit=100')).json().data.map((m: { id: string }) => m.id)
  assert.ok(all.includes('mnist-cnn') && all.includes('mobilenet-v2') && all.includes(ft.modelId))
  const fine = (await get('/v1/models?kind=fine_tuned')).json().data
  assert.deepEqual(
    fine.map((m: { id: string }) => m.id),
    [ft.modelId],
  )
  const builtin = (await get('/v1/models?kind=builtin')).json().data.map((m: { id: string }) => m.id)
  assert.deepEqual(builtin.sort(), ['inception-v3', 'mnist-cnn', 'mobilenet-v2'])
  assert.deepEqual(
    (await get('/v1/models?base_model=mnist-cnn')).json().data.map((m: { id: string }) => m.id),
    [ft.modelId],
  )
  assert.equal((await get('/v1/models?base_model=mobilenet-v2')).json().data.length, 0)
  assert.deepEqual(
    (await get(`/v1/models?job=${ft.jobId}`)).json().data.map((m: { id: string }) => m.id),
    [ft.modelId],
  )
  const bad = await get('/v1/models?kind=nope')
  assert.equal(bad.statusCode, 400)
  assert.equal(bad.json().error.code, 'invalid_request')
})

test('a model exposes classes, shape, preprocessing, final/best/evaluation metrics, backend, seed, size, sha256', async () => {
  const res = await get(`/v1/models/${enc(ft.modelId)}`)
  assert.equal(res.statusCode, 200)
  const m = res.json()
  assert.deepEqual(m.classes, ['5', '6', '7', '8', '9'])
  assert.deepEqual(m.input_shape, [28, 28, 1])
  assert.equal(m.preprocessing.scale, 1 / 255)
  assert.ok(['tensorflow', 'wasm', 'cpu'].includes(m.backend))
  assert.equal(m.seed, 11)
  assert.ok(m.bytes > 1000)
  assert.match(m.sha256, /^[0-9a-f]{64}$/)
  const epochs = ft.messages.filter((x) => x.type === 'epoch') as unknown as {
    step: number
    metrics: Record<string, number>
  }[]
  const last = epochs[epochs.length - 1]
  assert.equal(m.metrics.final.step, last.step)
  assert.equal(m.metrics.final.val_accuracy, last.metrics.val_accuracy)
  const bestVal = Math.max(...epochs.map((e) => e.metrics.val_accuracy))
  assert.equal(m.metrics.best.val_accuracy, bestVal)
  assert.equal(m.metrics.evaluation.samples > 0, true)
  // the list shows the same metrics
  const listed = (await get('/v1/models?kind=fine_tuned')).json().data[0]
  assert.deepEqual(listed.metrics, m.metrics)
  const builtin = (await get('/v1/models/mnist-cnn')).json()
  assert.equal(builtin.metrics, null)
})

test('lineage: base chain, job, training file and checkpoints', async () => {
  const res = await get(`/v1/models/${enc(ft.modelId)}/lineage`)
  assert.equal(res.statusCode, 200, res.body)
  const l = res.json()
  assert.equal(l.object, 'model.lineage')
  assert.deepEqual(
    l.chain.map((c: { id: string }) => c.id),
    [ft.modelId, 'mnist-cnn'],
  )
  assert.equal(l.job.id, ft.jobId)
  assert.equal(l.job.seed, 11)
  assert.equal(l.training_file.id, trainFile)
  assert.equal(l.training_file.rows, 600)
  const checkpoints = ft.messages.filter((x) => x.type === 'checkpoint') as { step: number }[]
  assert.deepEqual(
    l.checkpoints.map((c: { step: number }) => c.step),
    checkpoints.map((c) => c.step),
  )
  assert.match(l.checkpoints[0].id, /^ftckpt-/)
  assert.equal(typeof l.checkpoints[0].metrics.loss, 'number')
  const base = (await get('/v1/models/mnist-cnn/lineage')).json()
  assert.deepEqual(
    base.chain.map((c: { id: string }) => c.id),
    ['mnist-cnn'],
  )
  assert.equal(base.job, null)
  assert.equal((await get('/v1/models/nope/lineage')).statusCode, 404)
})

/** Service predictions (class -> probability) for PNGs of the first `n` test images. */
async function servicePredictions(modelId: string, n: number) {
  const images = await Promise.all(Array.from({ length: n }, (_, i) => pngOf(test5to9, i)))
  const res = await post(`/v1/models/${enc(modelId)}/predictions`, {
    inputs: images.map((b) => ({ image: b.toString('base64') })),
    top_k: 5,
  })
  assert.equal(res.statusCode, 200, res.body)
  return res
    .json()
    .data.map((d: { predictions: { class: string; probability: number }[] }) =>
      Object.fromEntries(d.predictions.map((p) => [p.class, p.probability])),
    ) as Record<string, number>[]
}

/** Loads an unzipped model with stock TF.js from memory and predicts the first `n` test images. */
async function localPredictions(dir: string, n: number) {
  const tf: Tf = require('@tensorflow/tfjs-node')
  const modelJson = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8'))
  const weights = await readFile(join(dir, 'weights.bin'))
  const metadata = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8'))
  const model = await tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: modelJson.modelTopology,
      weightSpecs: modelJson.weightsManifest.flatMap((g: { weights: unknown[] }) => g.weights),
      weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
    }),
  )
  const x = preprocessRows(test5to9, rowRange(0, n), metadata.preprocessing, metadata.input_shape)
  const probs = tf.tidy(() =>
    (model.predict(tf.tensor(x, [n, 28, 28, 1])) as import('@tensorflow/tfjs-node').Tensor).dataSync(),
  )
  model.dispose()
  return Array.from({ length: n }, (_, i) =>
    Object.fromEntries((metadata.classes as string[]).map((c, j) => [c, probs[i * 5 + j]])),
  )
}

function assertClose(a: Record<string, number>[], b: Record<string, number>[]) {
  assert.equal(a.length, b.length)
  for (let i = 0; i < a.length; i++)
    for (const c of Object.keys(b[i]))
      assert.ok(Math.abs(a[i][c] - b[i][c]) < 1e-5, `input ${i} class ${c}: ${a[i][c]} vs ${b[i][c]}`)
}

test('the downloaded model zip loads with stock TF.js and predicts what the service predicts', async () => {
  const res = await app.inject({ method: 'GET', url: `/v1/models/${enc(ft.modelId)}/content`, headers: bearer(key) })
  assert.equal(res.statusCode, 200)
  const dir = join(work, 'model')
  assert.deepEqual((await unzipToDir(res.rawPayload, dir)).sort(), ['metadata.json', 'model.json', 'weights.bin'])
  assertClose(await localPredictions(dir, 16), await servicePredictions(ft.modelId, 16))
})

test('format=saved_model: a frozen SavedModel that tfjs-node loads and that predicts like the service and the eager model', async () => {
  const tf: Tf = require('@tensorflow/tfjs-node')
  const url = `/v1/models/${enc(ft.modelId)}/content?format=saved_model`
  const res = await app.inject({ method: 'GET', url, headers: bearer(key) })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.headers['content-type'], 'application/zip')
  const dir = join(work, 'saved-model')
  assert.deepEqual((await unzipToDir(res.rawPayload, dir)).sort(), ['metadata.json', 'saved_model.pb', 'variables/'])
  const meta = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8'))
  assert.deepEqual(meta.classes, ['5', '6', '7', '8', '9'])
  assert.deepEqual(meta.saved_model.inputs, [{ name: 'input', dtype: 'float32', shape: [-1, ...meta.input_shape] }])
  assert.deepEqual(meta.saved_model.outputs, [{ name: 'probabilities', dtype: 'float32', shape: [-1, 5] }])
  assert.equal(meta.saved_model.signature, 'serving_default')

  const n = 16
  const graph = await tf.node.loadSavedModel(dir, ['serve'], 'serving_default')
  // tfjs-node names the signature's keys
  assert.deepEqual([graph.inputs[0].name, graph.outputs[0].name], ['input', 'probabilities'])
  const x = preprocessRows(test5to9, rowRange(0, n), meta.preprocessing, meta.input_shape)
  const out = graph.predict(tf.tensor(x, [n, ...meta.input_shape])) as import('@tensorflow/tfjs-node').Tensor
  const probs = out.dataSync()
  out.dispose()
  graph.dispose()
  const exported = Array.from({ length: n }, (_, i) =>
    Object.fromEntries((meta.classes as string[]).map((c, j) => [c, probs[i * 5 + j]])),
  )
  const layersDir = join(work, 'model-for-export')
  await unzipToDir(
    (await app.inject({ method: 'GET', url: `/v1/models/${enc(ft.modelId)}/content`, headers: bearer(key) }))
      .rawPayload,
    layersDir,
  )
  const eager = await localPredictions(layersDir, n)
  const service = await servicePredictions(ft.modelId, n)
  const maxEager = Math.max(...eager.flatMap((r) => Object.values(r).map(Math.abs)))
  const tolerance = 1e-4 * Math.max(1, maxEager)
  for (const [name, other] of [
    ['eager', eager],
    ['service', service],
  ] as const) {
    let diff = 0
    for (let i = 0; i < n; i++)
      for (const c of Object.keys(other[i])) diff = Math.max(diff, Math.abs(exported[i][c] - other[i][c]))
    assert.ok(diff <= tolerance, `SavedModel vs ${name}: max diff ${diff} > ${tolerance}`)
  }

  // the admin twin serves the same graph
  const admin = await app.inject({
    method: 'GET',
    url: `/v1/admin/models/${enc(ft.modelId)}/content?format=saved_model`,
    headers: adminAuth,
  })
  assert.equal(admin.statusCode, 200, admin.body)
  const adminPb = (await unzipToMemory(admin.rawPayload)).get('saved_model.pb')!
  assert.ok(adminPb.equals(await readFile(join(dir, 'saved_model.pb'))))

  const bad = await app.inject({ method: 'GET', url: `${url.split('?')[0]}?format=onnx`, headers: bearer(key) })
  assert.equal(bad.statusCode, 400)
})

test('format=saved_model: a model with a layer the graph compiler does not translate is 409 model_not_freezable', async () => {
  const tf: Tf = require('@tensorflow/tfjs-node')
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ name: 'hidden', inputShape: [4], units: 8, activation: 'relu' }),
      tf.layers.layerNormalization({ name: 'norm' }),
      tf.layers.dense({ name: 'out', units: 3, activation: 'softmax' }),
    ],
  })
  const modelDir = join(work, 'unfreezable')
  await saveModel(tf as never, model as never, modelDir)
  model.dispose()
  const zipped = await zipBuffer({
    'model.json': await readFile(join(modelDir, 'model.json')),
    'weights.bin': await readFile(join(modelDir, 'weights.bin')),
  })
  const body = multipart({ input_shape: '[4]', classes: '["a","b","c"]' }, { name: 'unfreezable.zip', content: zipped })
  const up = await app.inject({
    method: 'POST',
    url: '/v1/models',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  assert.equal(up.statusCode, 201, up.body)
  const id = up.json().id as string
  const res = await get(`/v1/models/${enc(id)}/content?format=saved_model`)
  assert.equal(res.statusCode, 409, res.body)
  assert.equal(res.json().error.code, 'model_not_freezable')
  assert.match(res.json().error.message, /layer "norm" \(LayerNormalization\)/)
  assert.equal(res.json().error.param, 'format')
  // the default download is unchanged
  assert.equal((await get(`/v1/models/${enc(id)}/content`)).statusCode, 200)
})

test('checkpoint download: a whole-model checkpoint zips, loads and predicts like the service; a partial one is 409', async () => {
  const list = (await get(`/v1/fine_tuning/jobs/${ft.jobId}/checkpoints`)).json().data as { id: string }[]
  assert.ok(list.length >= 1)
  const row = await app.db.checkpoint.findUniqueOrThrow({ where: { id: list[0].id }, include: { artifact: true } })
  const engineDir = app.storage.workPath(row.artifact.path)
  const whole = ['model.json', 'weights.bin', 'metadata.json'].every((f) => existsSync(join(engineDir, f)))
  const engineCkpt = await app.inject({
    method: 'GET',
    url: `/v1/fine_tuning/jobs/${ft.jobId}/checkpoints/${list[0].id}/content`,
    headers: bearer(key),
  })
  if (whole) {
    assert.equal(engineCkpt.statusCode, 200)
  } else {
    // the training process of this checkout still writes head-only checkpoints
    assert.equal(engineCkpt.statusCode, 409, engineCkpt.body)
    assert.equal(engineCkpt.json().error.code, 'checkpoint_not_downloadable')
  }

  // A checkpoint directory holding a whole model (the layout the engine moves to) downloads as a model.
  const ckptId = await registerWholeModelCheckpoint(app, projectId, ft.jobId, ft.modelDir, 1000)
  const res = await app.inject({
    method: 'GET',
    url: `/v1/fine_tuning/jobs/${ft.jobId}/checkpoints/${ckptId}/content`,
    headers: bearer(key),
  })
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['content-type'], 'application/zip')
  const dir = join(work, 'checkpoint')
  assert.deepEqual((await unzipToDir(res.rawPayload, dir)).sort(), ['metadata.json', 'model.json', 'weights.bin'])
  assertClose(await localPredictions(dir, 8), await servicePredictions(ft.modelId, 8))

  const missing = await get(`/v1/fine_tuning/jobs/${ft.jobId}/checkpoints/ftckpt-nope/content`)
  assert.equal(missing.statusCode, 404)
  const otherJob = await get(`/v1/fine_tuning/jobs/ftjob-aaaaaaaaaaaaaaaaaaaaaaaa/checkpoints/${ckptId}/content`)
  assert.equal(otherJob.statusCode, 404)
})

test('evaluations: refused for incompatible files; queued, run by the worker, listed and read', async () => {
  await writeCsv(join(work, 'rows.csv'))
  const csv = await uploadProcessedFile(app, key, 'rows.csv', await readFile(join(work, 'rows.csv')))
  const tabular = await post(`/v1/models/${enc(ft.modelId)}/evaluations`, { file: csv })
  assert.equal(tabular.statusCode, 400)
  assert.equal(tabular.json().error.code, 'incompatible_dataset')
  await writeIdxZip(loadMnist('test', [0, 1, 5], 60), join(work, 'other.zip'))
  const other = await uploadProcessedFile(app, key, 'other.zip', await readFile(join(work, 'other.zip')))
  const unknown = await post(`/v1/models/${enc(ft.modelId)}/evaluations`, { file: other })
  assert.equal(unknown.statusCode, 400)
  assert.equal(unknown.json().error.code, 'incompatible_dataset')
  assert.match(unknown.json().error.details[0].message, /class "0"/)
  assert.equal((await post(`/v1/models/${enc(ft.modelId)}/evaluations`, { file: 'file-nope' })).statusCode, 404)

  await writeIdxZip(test5to9, join(work, 'test.zip'))
  const testFile = await uploadProcessedFile(app, key, 'test.zip', await readFile(join(work, 'test.zip')))
  const created = await post(`/v1/models/${enc(ft.modelId)}/evaluations`, { file: testFile })
  assert.equal(created.statusCode, 201, created.body)
  const e = created.json()
  assert.match(e.id, /^eval-[a-z0-9]{24}$/)
  assert.equal(e.object, 'model.evaluation')
  assert.equal(e.status, 'queued')

  // While the evaluation is unfinished, the model cannot be deleted.
  const busy = await app.inject({ method: 'DELETE', url: `/v1/models/${enc(ft.modelId)}`, headers: bearer(key) })
  assert.equal(busy.statusCode, 409)
  assert.equal(busy.json().error.code, 'model_in_use')

  evaluationWorker = startEvaluationWorker({
    config: env.config,
    db: app.db,
    storage: app.storage,
    log: { info() {}, warn() {}, error() {} },
  })
  const done = await waitFor(
    async () => {
      const r = (await get(`/v1/models/${enc(ft.modelId)}/evaluations/${e.id}`)).json()
      return (r.status === 'succeeded' || r.status === 'failed') && r
    },
    60_000,
    'the evaluation to finish',
  )
  assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
  const r = done.result
  assert.equal(r.samples, 200)
  assert.deepEqual(r.classes, ['5', '6', '7', '8', '9'])
  assert.equal(
    r.confusion_matrix.flat().reduce((a: number, b: number) => a + b, 0),
    200,
  )
  assert.equal(
    r.per_class.reduce((a: number, c: { support: number }) => a + c.support, 0),
    200,
  )
  // accuracy equals the share of the service's own top-1 predictions that are right
  const top1 = await servicePredictions(ft.modelId, 200)
  const correct = top1.filter(
    (p, i) => Object.entries(p).sort((a, b) => b[1] - a[1])[0][0] === test5to9.classes[test5to9.y[i]],
  ).length
  assert.ok(Math.abs(r.accuracy - correct / 200) < 1e-9, `${r.accuracy} vs ${correct / 200}`)
  assert.ok(['tensorflow', 'wasm', 'cpu'].includes(done.backend))

  const list = (await get(`/v1/models/${enc(ft.modelId)}/evaluations`)).json()
  assert.deepEqual(
    list.data.map((x: { id: string }) => x.id),
    [e.id],
  )
  assert.equal((await get(`/v1/models/mnist-cnn/evaluations/${e.id}`)).statusCode, 404)
})

test('DELETE is refused while an unfinished job uses the model as base or distillation teacher', async () => {
  const del = () => app.inject({ method: 'DELETE', url: `/v1/models/${enc(ft.modelId)}`, headers: bearer(key) })
  // a job queued on it as its base (no worker runs here, so it stays queued)
  const job = await post('/v1/fine_tuning/jobs', { model: ft.modelId, training_file: trainFile })
  assert.equal(job.statusCode, 200, job.body)
  let res = await del()
  assert.equal(res.statusCode, 409)
  assert.equal(res.json().error.code, 'model_in_use')
  assert.match(res.json().error.message, /base model/)
  await app.db.fineTuningJob.update({ where: { id: job.json().id }, data: { status: 'cancelled' } })

  // a distillation job naming it as the teacher
  const teacherJob = await app.db.fineTuningJob.create({
    data: {
      id: newId('ftjob'),
      projectId,
      baseModelId: 'mnist-cnn',
      trainingFileId: trainFile,
      method: { type: 'distillation', distillation: { teacher_model: ft.modelId } },
      hyperparameters: {},
      seed: 1,
      status: 'running',
    },
  })
  res = await del()
  assert.equal(res.statusCode, 409)
  assert.match(res.json().error.message, /distillation teacher/)
  await app.db.fineTuningJob.update({ where: { id: teacherJob.id }, data: { status: 'succeeded' } })

  res = await del()
  assert.equal(res.statusCode, 200, res.body)
  assert.equal((await get(`/v1/models/${enc(ft.modelId)}`)).statusCode, 404)
  const builtin = await app.inject({ method: 'DELETE', url: '/v1/models/mnist-cnn', headers: bearer(key) })
  assert.equal(builtin.statusCode, 400)
})
