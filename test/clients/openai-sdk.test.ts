// The official `openai` SDK pointed at Refit: models, files, and the fine-tuning job calls the SDK has
// (create, retrieve, list, events, checkpoints, cancel), against the real service (API + worker).
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import OpenAI, { toFile } from 'openai'
import { createRefitClient } from '../../openapi/client.js'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { type RunningService, startService } from '../helpers/service.js'

let env: TestEnv
let service: RunningService
let work: string
let client: OpenAI

before(async () => {
  env = await createTestEnv('openai_sdk')
  service = await startService(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-openai-'))
  const admin = createRefitClient({ baseUrl: service.url, apiKey: ADMIN_TOKEN })
  const project = await admin.POST('/v1/admin/projects', { body: { name: 'openai-sdk' } })
  const key = await admin.POST('/v1/admin/projects/{id}/api_keys', {
    params: { path: { id: project.data!.id } },
    body: { name: 'sdk' },
  })
  client = new OpenAI({ baseURL: `${service.url}/v1`, apiKey: key.data!.key, maxRetries: 0 })
})

after(async () => {
  await service?.stop()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

test('the openai SDK lists models, uploads a file and runs, follows and cancels fine-tuning jobs', async () => {
  const models = []
  for await (const m of client.models.list()) models.push(m)
  assert.ok(
    models.some((m) => m.id === 'mnist-cnn' && m.object === 'model'),
    'the built-in mnist-cnn is listed',
  )
  const base = await client.models.retrieve('mnist-cnn')
  assert.equal(base.owned_by, 'refit')

  const out = join(work, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit: 600, out })
  const file = await client.files.create({
    file: await toFile(await readFile(out), 'digits.zip'),
    purpose: 'fine-tune',
  })
  assert.match(file.id, /^file-/)
  assert.equal(file.object, 'file')
  assert.equal(file.filename, 'digits.zip')
  const processed = await waitFor(
    async () => {
      const f = await client.files.retrieve(file.id)
      return f.status !== 'uploaded' && f
    },
    60_000,
    'file validation',
  )
  assert.equal(processed.status, 'processed')
  const files = await client.files.list()
  assert.ok(files.data.some((f) => f.id === file.id))

  const job = await client.fineTuning.jobs.create({
    model: 'mnist-cnn',
    training_file: file.id,
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 2, batch_size: 64 } } } as any,
    seed: 3,
    suffix: 'sdk',
  })
  assert.match(job.id, /^ftjob-/)
  assert.equal(job.object, 'fine_tuning.job')
  assert.ok(['validating_files', 'queued'].includes(job.status))

  // A second job, cancelled while it waits behind the first (or as soon as it runs).
  const doomed = await client.fineTuning.jobs.create({
    model: 'mnist-cnn',
    training_file: file.id,
    hyperparameters: { n_epochs: 50 },
  })
  const cancelled = await client.fineTuning.jobs.cancel(doomed.id)
  assert.equal(cancelled.id, doomed.id)
  assert.ok(['cancelling', 'cancelled'].includes(cancelled.status), cancelled.status)

  const listed = []
  for await (const j of client.fineTuning.jobs.list({ limit: 10 })) listed.push(j.id)
  assert.deepEqual(listed, [doomed.id, job.id], 'newest first')

  const done = await waitFor(
    async () => {
      const j = await client.fineTuning.jobs.retrieve(job.id)
      return ['succeeded', 'failed', 'cancelled'].includes(j.status) && j
    },
    120_000,
    'the job to finish',
  )
  assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
  assert.equal(done.fine_tuned_model, `ft:mnist-cnn:sdk:${job.id.slice(6, 14)}`)
  assert.equal((done.hyperparameters as { n_epochs: number }).n_epochs, 2)

  const events = []
  for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 5 })) events.push(e)
  assert.ok(events.length > 5, `paged through all ${events.length} events`)
  assert.ok(events.every((e) => e.object === 'fine_tuning.job.event' && typeof e.message === 'string'))
  assert.match(events[0].message, /succeeded/i, 'newest first: the last event says the job succeeded')

  const checkpoints = await client.fineTuning.jobs.checkpoints.list(job.id)
  assert.equal(checkpoints.data.length, 2, 'one checkpoint per epoch')
  assert.equal(checkpoints.data[0].fine_tuning_job_id, job.id)
  assert.equal(checkpoints.data[0].step_number > checkpoints.data[1].step_number, true)

  const model = await client.models.retrieve(done.fine_tuned_model!)
  assert.equal(model.id, done.fine_tuned_model)

  const stopped = await waitFor(
    async () => {
      const j = await client.fineTuning.jobs.retrieve(doomed.id)
      return j.status === 'cancelled' && j
    },
    60_000,
    'the cancelled job',
  )
  assert.equal(stopped.fine_tuned_model, null)

  // Errors surface as the SDK's typed errors carrying Refit's envelope.
  await assert.rejects(client.fineTuning.jobs.cancel(doomed.id), (err: unknown) => {
    assert.ok(err instanceof OpenAI.ConflictError, String(err))
    assert.equal(err.status, 409)
    assert.equal(err.code, 'job_not_cancellable')
    return true
  })
  await assert.rejects(client.fineTuning.jobs.retrieve('ftjob-doesnotexist000000000000'), OpenAI.NotFoundError)
})
