// The job contract (src/schemas/jobs.ts, objects.ts): every method and state a job can be in answers
// exactly the closed schema — no field the schema lacks, none it names dropped by the serializer — and
// rows written before the contract (fields missing, fields since retired) still read.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { Value } from 'typebox/value'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { JobObject } from '../../src/schemas/objects.js'
import { bearer, buildTestApp, createProjectKey, createTestEnv, multipart, type TestEnv } from '../helpers/env.js'
import { fileProcessorFor } from '../helpers/file-processor.js'

let env: TestEnv
let app: FastifyInstance
let auth: { authorization: string }
let dataDir: string
let digits: string
let unprocessed: string

before(async () => {
  env = await createTestEnv('job_contract', { MAX_CONCURRENT_JOBS: '1000' })
  app = await buildTestApp(env.config)
  auth = bearer((await createProjectKey(app, 'contract')).key)
  dataDir = await mkdtemp(join(tmpdir(), 'refit-contract-'))
  const out = join(dataDir, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [0, 1, 2, 3, 4], format: 'idx', limit: 100, out })
  const zip = await readFile(out) // mnist-cnn's own classes, so it can also teach
  digits = await upload('digits.zip', zip)
  await fileProcessorFor(app)(digits)
  unprocessed = await upload('later.zip', zip) // never validated: jobs on it wait in validating_files
})
after(async () => {
  await app?.close()
  await env?.cleanup()
  if (dataDir) await rm(dataDir, { recursive: true, force: true })
})

async function upload(name: string, content: Buffer) {
  const body = multipart({ purpose: 'fine-tune' }, { name, content })
  const res = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...auth, ...body.headers },
    payload: body.payload,
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json().id as string
}

async function create(payload: Record<string, unknown>) {
  const res = await app.inject({ method: 'POST', url: '/v1/fine_tuning/jobs', headers: auth, payload })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().id as string
}

/** GET the job and hold it to the schema: closed parts valid, and exactly the schema's fields on top. */
async function contractOf(id: string) {
  const res = await app.inject({ url: `/v1/fine_tuning/jobs/${id}`, headers: auth })
  assert.equal(res.statusCode, 200, res.body)
  const job = res.json()
  const errors = [...Value.Errors(JobObject, job)].map((e) => `${e.instancePath} ${e.message}`)
  assert.deepEqual(errors, [], `job ${id} (${job.method?.type}, ${job.status}) matches the contract`)
  assert.deepEqual(Object.keys(job).sort(), Object.keys(JobObject.properties).sort())
  return job
}

test('each method, queued or waiting for its files, answers the closed job schema', async () => {
  const transfer = await contractOf(
    await create({
      model: 'mnist-cnn',
      training_file: digits,
      method: { type: 'transfer', transfer: { head: { hidden_units: 32 }, hyperparameters: { n_epochs: 2 } } },
    }),
  )
  assert.equal(transfer.status, 'queued')
  assert.deepEqual(Object.keys(transfer.method), ['type', 'transfer'])
  assert.equal(transfer.method.transfer.head.hidden_units, 32)
  assert.equal(transfer.hyperparameters.n_epochs, 2)
  assert.equal(transfer.hyperparameters.learning_rate_multiplier, 1)
  assert.deepEqual(transfer.method.transfer.hyperparameters, transfer.hyperparameters)

  const supervised = await contractOf(
    await create({ model: 'cnn-small', training_file: digits, method: { type: 'supervised' } }),
  )
  assert.deepEqual(Object.keys(supervised.method.supervised), ['hyperparameters'])

  const distilled = await contractOf(
    await create({
      model: 'cnn-small',
      training_file: digits,
      method: { type: 'distillation', distillation: { teacher_model: 'mnist-cnn', temperature: 2 } },
    }),
  )
  assert.equal(distilled.method.distillation.temperature, 2)
  assert.equal(distilled.method.distillation.alpha, 0.7)

  // before its file is validated, what was not given reads "auto"
  const waiting = await contractOf(
    await create({ model: 'mnist-cnn', training_file: unprocessed, hyperparameters: { batch_size: 8 } }),
  )
  assert.equal(waiting.status, 'validating_files')
  assert.equal(waiting.hyperparameters.batch_size, 8)
  assert.equal(waiting.hyperparameters.n_epochs, 'auto')
  assert.equal(waiting.hyperparameters.early_stopping, null)
  assert.equal(waiting.progress, null)
})

test('a row written before the contract reads: missing fields take their meaning, retired ones are dropped', async () => {
  const id = await create({ model: 'mnist-cnn', training_file: digits, hyperparameters: { learning_rate: 0.002 } })
  const row = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id } })
  const { learning_rate_multiplier: _gone, ...older } = row.hyperparameters as Record<string, unknown>
  await app.db.fineTuningJob.update({
    where: { id },
    data: {
      hyperparameters: { ...older, warmup: 3 },
      method: { ...(row.method as object), transfer: { ...(row.method as any).transfer, legacy_flag: true } },
      progress: { epoch: 1, total_epochs: 2, step: 3, total_steps: 10, fraction: 0.15, phase: 'head' },
    },
  })
  const job = await contractOf(id)
  assert.equal(job.hyperparameters.learning_rate_multiplier, 2, 'derived from learning_rate')
  assert.equal('warmup' in job.hyperparameters, false)
  assert.equal('legacy_flag' in job.method.transfer, false)
  assert.deepEqual(job.progress, {
    epoch: 1,
    total_epochs: 2,
    step: 3,
    total_steps: 10,
    fraction: 0.15,
    estimated_finish: null,
  })
  assert.equal(job.estimated_finish, null)
})
