// The three methods through the API and a real worker: supervised training of a preset, distillation
// of it into a smaller student, and transfer with a fine-tuning phase; plus the refusals at creation.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { startWorker, type WorkerHandle } from '../../workers/worker.js'
import {
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
  waitFor,
} from '../helpers/env.js'
import { waitForTerminal } from '../helpers/jobs.js'

let env: TestEnv
let app: FastifyInstance
let worker: WorkerHandle
let key: string
let work: string
let digits: string
let digits59: string

async function upload(digitList: number[], limit: number) {
  const out = join(work, `d-${digitList.join('')}.zip`)
  await makeMnistDataset({ split: 'train', digits: digitList, format: 'idx', limit, out })
  const body = multipart({ purpose: 'fine-tune' }, { name: 'd.zip', content: await readFile(out) })
  const res = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  assert.equal(res.statusCode, 201)
  const id = res.json().id as string
  await waitFor(
    async () => (await app.db.file.findUnique({ where: { id } }))?.status === 'processed',
    60_000,
    'validation',
  )
  return id
}

const post = (payload: object) =>
  app.inject({ method: 'POST', url: '/v1/fine_tuning/jobs', headers: bearer(key), payload })

before(async () => {
  env = await createTestEnv('methods')
  app = await buildTestApp(env.config)
  worker = await startWorker(env.config)
  ;({ key } = await createProjectKey(app))
  work = await mkdtemp(join(tmpdir(), 'refit-methods-'))
  digits = await upload([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 2000)
  digits59 = await upload([5, 6, 7, 8, 9], 1500)
})

after(async () => {
  await worker?.close()
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

test('architecture presets are listed as models of kind architecture', async () => {
  const res = await app.inject({ url: '/v1/models?kind=architecture&limit=100', headers: bearer(key) })
  assert.equal(res.statusCode, 200)
  const ids = res
    .json()
    .data.map((m: { id: string }) => m.id)
    .sort()
  assert.deepEqual(ids, ['cnn-large', 'cnn-small', 'mlp-large', 'mlp-small'])
})

test('refusals at creation: transfer from a preset, a teacher with other classes, a missing teacher', async () => {
  let res = await post({ model: 'cnn-small', training_file: digits, method: { type: 'transfer' } })
  assert.equal(res.statusCode, 400)
  assert.equal(res.json().error.code, 'model_not_trainable')
  res = await post({
    model: 'mlp-small',
    training_file: digits,
    method: { type: 'distillation', distillation: { teacher_model: 'mnist-cnn' } },
  })
  assert.equal(res.statusCode, 400)
  assert.equal(res.json().error.code, 'teacher_classes_mismatch')
  assert.equal(res.json().error.param, 'method.distillation.teacher_model')
  res = await post({
    model: 'mlp-small',
    training_file: digits,
    method: { type: 'distillation', distillation: { teacher_model: 'nope' } },
  })
  assert.equal(res.statusCode, 404)
  assert.equal(res.json().error.param, 'method.distillation.teacher_model')
  res = await post({ model: 'mlp-small', training_file: digits, method: { type: 'dpo' } })
  assert.equal(res.json().error.code, 'unsupported_method')
  res = await post({ model: 'mlp-small', training_file: digits, method: { type: 'supervised', transfer: {} } })
  assert.equal(res.json().error.param, 'method.transfer')
})

test('supervised preset, then distillation of it into a smaller student', async () => {
  const sup = await post({
    model: 'cnn-small',
    training_file: digits,
    seed: 1,
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 3, batch_size: 32, optimizer: 'adam' } } },
  })
  assert.equal(sup.statusCode, 200, sup.body)
  assert.deepEqual(sup.json().method.supervised.hyperparameters, {
    n_epochs: 3,
    batch_size: 32,
    learning_rate: 0.001,
    learning_rate_multiplier: 1,
    validation_split: 0.1,
    optimizer: 'adam',
    early_stopping: null,
  })
  const teacherJob = await waitForTerminal(app, sup.json().id)
  assert.equal(teacherJob.status, 'succeeded', `${teacherJob.errorCode}: ${teacherJob.errorMessage}`)
  const teacher = await app.inject({ url: `/v1/models/${teacherJob.fineTunedModelId}`, headers: bearer(key) })
  assert.equal(teacher.json().base_model, 'cnn-small')
  assert.ok(
    teacher.json().metrics.evaluation.accuracy > 0.6,
    `teacher accuracy ${teacher.json().metrics.evaluation.accuracy}`,
  )

  const dist = await post({
    model: 'mlp-small',
    training_file: digits,
    seed: 1,
    method: {
      type: 'distillation',
      distillation: {
        teacher_model: teacherJob.fineTunedModelId,
        temperature: 4,
        alpha: 0.7,
        hyperparameters: { n_epochs: 3 },
      },
    },
  })
  assert.equal(dist.statusCode, 200, dist.body)
  assert.deepEqual(dist.json().method.distillation.temperature, 4)
  const studentJob = await waitForTerminal(app, dist.json().id)
  assert.equal(studentJob.status, 'succeeded', `${studentJob.errorCode}: ${studentJob.errorMessage}`)
  const student = (await app.inject({ url: `/v1/models/${studentJob.fineTunedModelId}`, headers: bearer(key) })).json()
  assert.equal(student.base_model, 'mlp-small')
  assert.ok(student.metrics.evaluation.accuracy > 0.5)
  const model = await app.db.model.findUniqueOrThrow({ where: { id: studentJob.fineTunedModelId! } })
  const meta = model.metadata as { distillation?: { teacher?: string; temperature?: number; alpha?: number } }
  assert.equal(meta.distillation?.temperature, 4)
  assert.equal(meta.distillation?.alpha, 0.7)
  // its lineage names the teacher (it used to be recorded as null)
  assert.equal(meta.distillation?.teacher, teacherJob.fineTunedModelId)
  const lineage = await app.inject({ url: `/v1/models/${studentJob.fineTunedModelId}/lineage`, headers: bearer(key) })
  assert.equal(lineage.json().teacher, teacherJob.fineTunedModelId)
  // the teacher cannot be deleted while a job uses it... and can once none does
  const del = await app.inject({
    method: 'DELETE',
    url: `/v1/models/${teacherJob.fineTunedModelId}`,
    headers: bearer(key),
  })
  assert.equal(del.statusCode, 200)
})

test('transfer with an unfrozen top block and a fine-tuning phase', async () => {
  const res = await post({
    model: 'mnist-cnn',
    training_file: digits59,
    seed: 2,
    method: {
      type: 'transfer',
      transfer: {
        hyperparameters: { n_epochs: 2, batch_size: 32 },
        head: { hidden_units: 64, dropout: 0.3 },
        unfreeze_top_blocks: 1,
        fine_tune: { n_epochs: 1 },
      },
    },
  })
  assert.equal(res.statusCode, 200, res.body)
  assert.deepEqual(res.json().method.transfer.fine_tune, { n_epochs: 1, learning_rate: 0.0001 })
  const job = await waitForTerminal(app, res.json().id)
  assert.equal(job.status, 'succeeded', `${job.errorCode}: ${job.errorMessage}`)
  assert.equal(
    await app.db.metric.count({ where: { jobId: job.id, name: 'loss' } }),
    3,
    '2 head epochs + 1 fine-tune epoch',
  )
})
