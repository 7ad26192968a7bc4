// The admin routes the dashboard uses on a project's behalf: they take the project from the path (or from the
// job or model) and answer what the project routes answer. Job creation's dry run resolves without writing.
import assert from 'node:assert/strict'
import { createReadStream } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { newId } from '../../src/lib/ids.js'
import {
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
} from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance
let work: string
let zip: string
let a: { projectId: string; key: string }
let b: { projectId: string; key: string }
let fileId: string

async function processedIdxFile(projectId: string) {
  const id = newId('file')
  const stored = await app.storage.writeStream(`files/${id}`, createReadStream(zip))
  await app.db.file.create({
    data: {
      id,
      projectId,
      filename: 'digits.zip',
      purpose: 'fine-tune',
      format: 'idx',
      bytes: BigInt(stored.bytes),
      sha256: stored.sha256,
      storagePath: `files/${id}`,
      status: 'processed',
      stats: { rows: 60, image_shape: [28, 28, 1], classes: ['5', '6'], class_counts: [30, 30] },
    },
  })
  return id
}

const admin = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object) =>
  app.inject({ method, url, headers: adminAuth, ...(payload ? { payload } : {}) })

before(async () => {
  env = await createTestEnv('admin_actions')
  app = await buildTestApp(env.config)
  work = await mkdtemp(join(tmpdir(), 'refit-admin-actions-'))
  zip = join(work, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6], format: 'idx', limit: 60, out: zip })
  a = await createProjectKey(app, 'alpha')
  b = await createProjectKey(app, 'beta')
  fileId = await processedIdxFile(a.projectId)
})

after(async () => {
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

test('dry run: the job as it would resolve ("auto" values included), nothing created; errors as on creation', async () => {
  const body = {
    model: 'mnist-cnn',
    training_file: fileId,
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 'auto', learning_rate: 0.01 } } },
  }
  const before = await app.db.fineTuningJob.count()
  const dry = await admin('POST', `/v1/admin/projects/${a.projectId}/fine_tuning/jobs?dry_run=true`, body)
  assert.equal(dry.statusCode, 200, dry.body)
  const job = dry.json()
  assert.equal(job.id, '')
  assert.equal(job.status, 'queued')
  assert.deepEqual(job.project, { id: a.projectId, name: 'alpha' })
  // 60 rows: auto resolves to 20 epochs, batch 16, validation split 0.1; the given learning rate stays
  assert.equal(job.hyperparameters.n_epochs, 20)
  assert.equal(job.hyperparameters.batch_size, 16)
  assert.equal(job.hyperparameters.validation_split, 0.1)
  assert.equal(job.hyperparameters.learning_rate, 0.01)
  assert.equal(job.method.type, 'transfer')
  assert.equal(job.method.transfer.hyperparameters.n_epochs, 20)
  assert.equal(await app.db.fineTuningJob.count(), before, 'a dry run creates nothing')

  const bad = await admin('POST', `/v1/admin/projects/${a.projectId}/fine_tuning/jobs?dry_run=true`, {
    ...body,
    method: { type: 'transfer', transfer: { hyperparameters: { batch_size: 100000 } } },
  })
  assert.equal(bad.statusCode, 400)
  // the file belongs to project alpha: beta cannot use it, as with beta's own key (OpenAI's answer)
  const other = await admin('POST', `/v1/admin/projects/${b.projectId}/fine_tuning/jobs?dry_run=true`, body)
  assert.equal(other.statusCode, 400)
  assert.equal(other.json().error.code, 'invalid_training_file')
  assert.equal(other.json().error.param, 'training_file')
  const noProject = await admin('POST', '/v1/admin/projects/proj-nope/fine_tuning/jobs?dry_run=true', body)
  assert.equal(noProject.statusCode, 404)
})

test("create a job for a project: the project's own key sees it; search finds it", async () => {
  const res = await admin('POST', `/v1/admin/projects/${a.projectId}/fine_tuning/jobs`, {
    model: 'mnist-cnn',
    training_file: fileId,
    suffix: 'from-admin',
  })
  assert.equal(res.statusCode, 200, res.body)
  const id = res.json().id as string
  assert.match(id, /^ftjob-/)
  const own = await app.inject({ method: 'GET', url: `/v1/fine_tuning/jobs/${id}`, headers: bearer(a.key) })
  assert.equal(own.statusCode, 200)
  assert.equal(own.json().suffix, 'from-admin')
  const other = await app.inject({ method: 'GET', url: `/v1/fine_tuning/jobs/${id}`, headers: bearer(b.key) })
  assert.equal(other.statusCode, 404)

  const found = (await admin('GET', '/v1/admin/jobs?q=FROM-ADM')).json()
  assert.deepEqual(
    found.data.map((j: { id: string }) => j.id),
    [id],
  )
  assert.equal(found.data[0].queue_position, 1, 'the list carries the queue position of queued jobs')
  assert.equal(found.data[0].metrics, null, 'no epoch yet')
  assert.equal((await admin('GET', `/v1/admin/jobs?q=${id.slice(6, 14)}`)).json().data.length, 1)
  assert.equal((await admin('GET', '/v1/admin/jobs?q=no-such-thing')).json().data.length, 0)

  // the live stream's `job` event is the job as GET shows it: the queue position is not lost
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const abort = new AbortController()
  const res2 = await fetch(`${url}/v1/admin/jobs/${id}/events?stream=true`, {
    headers: adminAuth,
    signal: abort.signal,
  })
  const reader = res2.body!.getReader()
  let text = ''
  while (!/event: job\ndata: .*\n\n/.test(text)) text += new TextDecoder().decode((await reader.read()).value)
  abort.abort()
  const jobEvent = JSON.parse(/event: job\ndata: (.*)\n/.exec(text)![1]!)
  assert.equal(jobEvent.status, 'queued')
  assert.equal(jobEvent.queue_position, 1)

  // epoch rows make the summary; batch rows do not
  await app.db.metric.createMany({
    data: [
      { jobId: id, step: 4, epoch: 1, name: 'val_accuracy', value: 0.9 },
      { jobId: id, step: 4, epoch: 1, name: 'accuracy', value: 0.8 },
      { jobId: id, step: 8, epoch: 2, name: 'val_accuracy', value: 0.85 },
      { jobId: id, step: 8, epoch: 2, name: 'accuracy', value: 0.95 },
      { jobId: id, step: 10, epoch: 3, name: 'batch_loss', value: 0.1 },
      { jobId: id, step: 10, epoch: 3, name: 'batch_accuracy', value: 1 },
    ],
  })
  const one = (await admin('GET', `/v1/admin/jobs/${id}`)).json()
  assert.deepEqual(one.metrics.final, { step: 8, epoch: 2, val_accuracy: 0.85, accuracy: 0.95 })
  assert.deepEqual(one.metrics.best, { step: 4, epoch: 1, val_accuracy: 0.9, accuracy: 0.8 })
  const checkpoints = await admin('GET', `/v1/admin/jobs/${id}/checkpoints`)
  assert.equal(checkpoints.statusCode, 200)
  assert.deepEqual(checkpoints.json().data, [])
  const content = await admin('GET', `/v1/admin/jobs/${id}/checkpoints/ftckpt-nope/content`)
  assert.equal(content.statusCode, 404)
})

test('upload a dataset and a model into a project through the admin routes', async () => {
  const form = multipart({ purpose: 'fine-tune' }, { name: 'digits.zip', content: await readFile(zip) })
  const up = await app.inject({
    method: 'POST',
    url: `/v1/admin/projects/${b.projectId}/files`,
    headers: { ...adminAuth, ...form.headers },
    payload: form.payload,
  })
  assert.equal(up.statusCode, 201, up.body)
  const own = await app.inject({ method: 'GET', url: `/v1/files/${up.json().id}`, headers: bearer(b.key) })
  assert.equal(own.statusCode, 200)
  assert.equal(own.json().filename, 'digits.zip')

  const bad = multipart({ input_shape: '[4]' }, { name: 'model.zip', content: Buffer.from('not a zip') })
  const model = await app.inject({
    method: 'POST',
    url: `/v1/admin/projects/${b.projectId}/models`,
    headers: { ...adminAuth, ...bad.headers },
    payload: bad.payload,
  })
  assert.equal(model.statusCode, 400, model.body)
  assert.equal(model.json().error.code, 'invalid_model')
})

test("webhooks of a project: create (secret once), list, deliveries, delete; another project's stay apart", async () => {
  const created = await admin('POST', `/v1/admin/projects/${a.projectId}/webhooks`, {
    url: 'https://93.184.215.14/hook', // a public literal: registration resolves names, and tests run offline
    events: ['failed'],
  })
  assert.equal(created.statusCode, 201, created.body)
  const hook = created.json()
  assert.match(hook.secret, /^whsec_/)
  const list = (await admin('GET', `/v1/admin/projects/${a.projectId}/webhooks`)).json()
  assert.deepEqual(
    list.data.map((w: { id: string }) => w.id),
    [hook.id],
  )
  assert.equal(list.data[0].secret, undefined)
  const own = await app.inject({ method: 'GET', url: '/v1/webhooks', headers: bearer(a.key) })
  assert.equal(own.json().data[0].id, hook.id)
  assert.equal((await admin('GET', `/v1/admin/projects/${b.projectId}/webhooks`)).json().data.length, 0)
  const deliveries = await admin('GET', `/v1/admin/projects/${a.projectId}/webhooks/${hook.id}/deliveries`)
  assert.equal(deliveries.statusCode, 200)
  assert.deepEqual(deliveries.json().data, [])
  assert.equal((await admin('DELETE', `/v1/admin/projects/${b.projectId}/webhooks/${hook.id}`)).statusCode, 404)
  const deleted = await admin('DELETE', `/v1/admin/projects/${a.projectId}/webhooks/${hook.id}`)
  assert.equal(deleted.statusCode, 200)
  assert.equal(deleted.json().deleted, true)
})

test('samples by index, and predictions with a built-in model on one of them', async () => {
  const samples = await admin('GET', `/v1/admin/files/${fileId}/samples?indices=7,2,999`)
  assert.equal(samples.statusCode, 200, samples.body)
  const data = samples.json().data as { index: number; label: string; png_base64: string }[]
  assert.deepEqual(
    data.map((s) => s.index),
    [7, 2],
    'in the order asked, out-of-range ones left out',
  )
  const res = await admin('POST', '/v1/admin/models/mnist-cnn/predictions', {
    inputs: [{ image: data[0]!.png_base64 }],
    top_k: 3,
  })
  assert.equal(res.statusCode, 200, res.body)
  const out = res.json()
  assert.equal(out.model, 'mnist-cnn')
  assert.equal(out.data[0].predictions.length, 3)
  const total = out.data[0].predictions.reduce((s: number, p: { probability: number }) => s + p.probability, 0)
  assert.ok(total > 0 && total <= 1.0001)
  const evals = await admin('GET', '/v1/admin/models/mnist-cnn/evaluations')
  assert.equal(evals.statusCode, 200)
  assert.deepEqual(evals.json().data, [])
})
