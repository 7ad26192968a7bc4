// The official `openai` Node SDK pointed at Refit, every call it has for files, fine-tuning and models,
// against the real service (API + worker), with no cast and no workaround: only the base URL and key change.
// Refit's own methods and statuses go through openapi/client.ts's typed helpers (refitJobBody, refitJob).
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import OpenAI, { toFile } from 'openai'
import { createRefitClient, refitJob, refitJobBody } from '../../openapi/client.js'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { type RunningService, startService } from '../helpers/service.js'

let env: TestEnv
let service: RunningService
let work: string
let client: OpenAI
let digits: Buffer
/** every request the SDK sent, as `METHOD path` */
const sent: string[] = []

async function projectKey(name: string, maxConcurrentJobs?: number) {
  const admin = createRefitClient({ baseUrl: service.url, apiKey: ADMIN_TOKEN })
  const project = await admin.POST('/v1/admin/projects', { body: { name } })
  if (maxConcurrentJobs)
    await admin.PATCH('/v1/admin/projects/{id}/limits', {
      params: { path: { id: project.data!.id } },
      body: { max_concurrent_jobs: maxConcurrentJobs },
    })
  const key = await admin.POST('/v1/admin/projects/{id}/api_keys', {
    params: { path: { id: project.data!.id } },
    body: { name: 'sdk' },
  })
  return key.data!.key
}

/** A client with the SDK's default retries (2), counting what it sends. */
function sdk(apiKey: string, maxRetries?: number) {
  return new OpenAI({
    baseURL: `${service.url}/v1`,
    apiKey,
    ...(maxRetries === undefined ? {} : { maxRetries }),
    fetch: async (url, init) => {
      sent.push(`${init?.method ?? 'GET'} ${new URL(String(url)).pathname}`)
      return fetch(url, init)
    },
  })
}

const terminal = (id: string, timeoutMs = 120_000) =>
  waitFor(
    async () => {
      const j = await client.fineTuning.jobs.retrieve(id)
      return ['succeeded', 'failed', 'cancelled'].includes(j.status) && j
    },
    timeoutMs,
    `job ${id} to finish`,
  )

before(async () => {
  env = await createTestEnv('openai_sdk')
  service = await startService(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-openai-'))
  client = sdk(await projectKey('openai-sdk'))
  const out = join(work, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit: 400, out })
  digits = await readFile(out)
})

after(async () => {
  await service?.stop()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

let fileId: string
let job: OpenAI.FineTuning.FineTuningJob

test('models.list / retrieve', async () => {
  const models = []
  for await (const m of client.models.list()) models.push(m)
  assert.ok(
    models.some((m) => m.id === 'mnist-cnn' && m.object === 'model'),
    'the built-in mnist-cnn is listed',
  )
  const base = await client.models.retrieve('mnist-cnn')
  assert.equal(base.owned_by, 'refit')
})

test('files.create (with expires_after) / waitForProcessing / retrieve / list / content', async () => {
  const file = await client.files.create({
    file: await toFile(digits, 'digits.zip'),
    purpose: 'fine-tune',
    expires_after: { anchor: 'created_at', seconds: 86_400 },
  })
  assert.match(file.id, /^file-/)
  assert.equal(file.object, 'file')
  assert.equal(file.filename, 'digits.zip')
  assert.equal(file.expires_at, file.created_at + 86_400)
  fileId = file.id
  const processed = await client.files.waitForProcessing(file.id, { pollInterval: 200 })
  assert.equal(processed.status, 'processed')
  assert.equal((await client.files.retrieve(file.id)).status, 'processed')

  const other = await client.files.create({ file: await toFile(digits, 'again.zip'), purpose: 'fine-tune' })
  await client.files.waitForProcessing(other.id, { pollInterval: 200 })
  const paged = []
  for await (const f of client.files.list({ limit: 1 })) paged.push(f.id)
  assert.deepEqual(paged, [other.id, file.id], 'auto-pagination, newest first')
  const oldest = []
  for await (const f of client.files.list({ limit: 1, order: 'asc', purpose: 'fine-tune' })) oldest.push(f.id)
  assert.deepEqual(oldest, [file.id, other.id])
  assert.deepEqual((await client.files.list({ purpose: 'fine-tune-results' })).data, [])

  const content = await client.files.content(file.id)
  assert.deepEqual(Buffer.from(await content.arrayBuffer()), digits)

  const deleted = await client.files.delete(other.id)
  assert.deepEqual(deleted, { id: other.id, object: 'file', deleted: true })
  await assert.rejects(client.files.retrieve(other.id), OpenAI.NotFoundError)
})

test('files.create of an OpenAI chat dataset ends in chat_format_not_supported', async () => {
  const chat = `${JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] })}\n`
  const file = await client.files.create({ file: await toFile(Buffer.from(chat), 'chat.jsonl'), purpose: 'fine-tune' })
  const done = await client.files.waitForProcessing(file.id, { pollInterval: 200 })
  assert.equal(done.status, 'error')
  assert.match(done.status_details ?? '', /classifiers/)
  const raw = (await client.files.retrieve(file.id)) as unknown as { error: { code: string } }
  assert.equal(raw.error.code, 'chat_format_not_supported')
})

test('jobs.create (Refit method, no cast) / list with metadata / retrieve / listEvents / checkpoints.list', async () => {
  job = await client.fineTuning.jobs.create(
    refitJobBody({
      model: 'mnist-cnn',
      training_file: fileId,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 2, batch_size: 64 } } },
      seed: 3,
      suffix: 'sdk',
      metadata: { run: 'e2e' },
    }),
  )
  assert.match(job.id, /^ftjob-/)
  assert.equal(job.object, 'fine_tuning.job')
  assert.equal(refitJob(job).method.type, 'transfer')

  // A second job, cancelled while it waits behind the first (or as soon as it runs).
  const doomed = await client.fineTuning.jobs.create({
    model: 'mnist-cnn',
    training_file: fileId,
    hyperparameters: { n_epochs: 50 },
    metadata: { run: 'doomed' },
  })
  const cancelled = await client.fineTuning.jobs.cancel(doomed.id)
  assert.equal(cancelled.id, doomed.id)
  assert.ok(['cancelling', 'cancelled'].includes(refitJob(cancelled).status), cancelled.status)

  const listed = []
  for await (const j of client.fineTuning.jobs.list({ limit: 1 })) listed.push(j.id)
  assert.deepEqual(listed, [doomed.id, job.id], 'newest first, one per page')
  const e2e = await client.fineTuning.jobs.list({ metadata: { run: 'e2e' } })
  assert.deepEqual(
    e2e.data.map((j) => j.id),
    [job.id],
  )

  const done = await terminal(job.id)
  assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
  assert.equal(done.fine_tuned_model, `ft:mnist-cnn:sdk:${job.id.slice(6, 14)}`)
  assert.equal(done.hyperparameters.n_epochs, 2)
  assert.equal(done.hyperparameters.learning_rate_multiplier, 1)
  job = done

  const events = []
  for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 5 })) events.push(e)
  assert.ok(events.length > 5, `paged through all ${events.length} events`)
  assert.ok(events.every((e) => e.object === 'fine_tuning.job.event' && typeof e.message === 'string'))
  assert.match(events[0].message, /succeeded/i, 'newest first: the last event says the job succeeded')

  const checkpoints = []
  for await (const c of client.fineTuning.jobs.checkpoints.list(job.id, { limit: 1 })) checkpoints.push(c)
  assert.equal(checkpoints.length, 2, 'one checkpoint per epoch')
  assert.equal(checkpoints[0].fine_tuning_job_id, job.id)
  assert.ok(checkpoints[0].step_number > checkpoints[1].step_number)
  assert.equal(
    checkpoints[1].fine_tuned_model_checkpoint,
    `${done.fine_tuned_model}:ckpt-step-${checkpoints[1].step_number}`,
  )

  const stopped = await terminal(doomed.id, 60_000)
  assert.equal(stopped.status, 'cancelled')
  assert.equal(stopped.fine_tuned_model, null)
})

test('result_files: a fine-tune-results CSV of the metric rows, read through files.content', async () => {
  assert.equal(job.result_files.length, 1)
  const [resultId] = job.result_files
  const meta = await client.files.retrieve(resultId)
  assert.equal(meta.purpose, 'fine-tune-results')
  const csv = await (await client.files.content(resultId)).text()
  const [header, ...rows] = csv.trim().split('\n')
  assert.equal(header, 'step,epoch,loss,accuracy,val_loss,val_accuracy')
  assert.equal(rows.length, 2, 'one line per epoch')
  assert.deepEqual(
    (await client.files.list({ purpose: 'fine-tune-results' })).data.map((f) => f.id),
    [resultId],
  )
})

test('a checkpoint name as model; legacy hyperparameters on a preset; nulls; learning_rate_multiplier', async () => {
  const [ckpt] = (await client.fineTuning.jobs.checkpoints.list(job.id)).data.slice(-1)
  const fromCkpt = await client.fineTuning.jobs.create({
    model: ckpt.fine_tuned_model_checkpoint,
    training_file: fileId,
    hyperparameters: { n_epochs: 1 },
    suffix: null,
    seed: null,
    validation_file: null,
    metadata: null,
    integrations: null,
  })
  assert.equal(fromCkpt.model, 'mnist-cnn')
  assert.equal((fromCkpt as unknown as { init_checkpoint: string }).init_checkpoint, ckpt.id)

  const legacy = await client.fineTuning.jobs.create({
    model: 'mlp-small',
    training_file: fileId,
    hyperparameters: { n_epochs: 1, batch_size: 32, learning_rate_multiplier: 2 },
  })
  assert.equal(legacy.method?.type, 'supervised', 'a preset trains supervised without a method')
  assert.equal(legacy.hyperparameters.learning_rate_multiplier, 2)
  const supervised = await client.fineTuning.jobs.create({
    model: 'mlp-small',
    training_file: fileId,
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 1, learning_rate_multiplier: 0.5 } } },
  })
  assert.equal(supervised.method?.supervised?.hyperparameters?.learning_rate_multiplier, 0.5)
  for (const j of [fromCkpt, legacy, supervised]) assert.equal((await terminal(j.id)).status, 'succeeded')
})

test('jobs.pause / resume: queued at once; running after a mid-epoch checkpoint; continues to the metrics of an uninterrupted run', async () => {
  const refit = createRefitClient({ baseUrl: service.url, apiKey: (client as unknown as { apiKey: string }).apiKey })
  // cnn-small trained from scratch: 360 training rows in batches of 8, 45 steps per epoch
  const body: OpenAI.FineTuning.JobCreateParams = {
    model: 'cnn-small',
    training_file: fileId,
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2, batch_size: 8 } } },
    seed: 9,
  }
  const straight = await client.fineTuning.jobs.create(body)
  const paused = await client.fineTuning.jobs.create(body)
  // waiting behind the first (one job per worker): paused at once, out of the queue
  const early = refitJob(await client.fineTuning.jobs.pause(paused.id))
  assert.equal(early.status, 'paused')
  const straightDone = await terminal(straight.id, 300_000)
  assert.equal(straightDone.status, 'succeeded', JSON.stringify(straightDone.error))
  assert.equal(refitJob(await client.fineTuning.jobs.retrieve(paused.id)).status, 'paused', 'a paused job is not run')

  // resumed, then paused as soon as it runs: it checkpoints at the end of its batch and stops
  assert.equal((await client.fineTuning.jobs.resume(paused.id)).status, 'queued')
  await waitFor(
    async () => (await client.fineTuning.jobs.retrieve(paused.id)).status === 'running',
    120_000,
    'the resumed job to run',
  )
  const pausing = refitJob(await client.fineTuning.jobs.pause(paused.id))
  assert.ok(
    (pausing.status === 'running' && pausing.status_reason === 'pausing') || pausing.status === 'paused',
    JSON.stringify(pausing),
  )
  const stopped = await waitFor(
    async () => {
      const j = refitJob(await client.fineTuning.jobs.retrieve(paused.id))
      return j.status !== 'running' && j
    },
    120_000,
    'the pause to land',
  )
  assert.equal(stopped.status, 'paused', JSON.stringify(stopped))
  const [mid] = (await client.fineTuning.jobs.checkpoints.list(paused.id)).data
  assert.equal((mid.metrics as { mid_epoch?: boolean }).mid_epoch, true, 'the newest checkpoint is the pause')
  assert.ok(mid.step_number >= 1 && mid.step_number < 90 && mid.step_number % 45 !== 0, String(mid.step_number))
  assert.equal(stopped.status_reason, `paused by user at step ${mid.step_number}`)

  await assert.rejects(client.fineTuning.jobs.pause(straight.id), (err: unknown) => {
    assert.ok(err instanceof OpenAI.ConflictError, String(err))
    assert.equal(err.code, 'job_not_pausable')
    return true
  })
  await assert.rejects(client.fineTuning.jobs.resume(straight.id), (err: unknown) => {
    assert.ok(err instanceof OpenAI.ConflictError, String(err))
    assert.equal(err.code, 'job_not_paused')
    return true
  })

  await client.fineTuning.jobs.resume(paused.id)
  const done = await terminal(paused.id, 300_000)
  assert.equal(done.status, 'succeeded', JSON.stringify(done.error))

  // continued, not restarted: the events say so, the pause checkpoint stays listed between the epochs'
  const messages = []
  for await (const e of client.fineTuning.jobs.listEvents(paused.id)) messages.push(e.message)
  assert.ok(
    messages.includes(`Job resumed: queued to continue from checkpoint ${mid.id} (step ${mid.step_number})`),
    messages.join('\n'),
  )
  assert.ok(
    messages.some(
      (m) =>
        m ===
        `resumed from the mid-epoch checkpoint of epoch ${Math.floor(mid.step_number / 45) + 1} (step ${mid.step_number})`,
    ),
  )
  const steps = (await client.fineTuning.jobs.checkpoints.list(paused.id)).data.map((c) => c.step_number)
  assert.deepEqual(
    steps,
    [90, 45, mid.step_number].sort((a, b) => b - a),
  )
  assert.equal(refitJob(done).trained_samples, refitJob(straightDone).trained_samples)

  // the same metric rows as the uninterrupted job (float32 optimizer state: equal to 1e-6)
  const rows = async (id: string) =>
    (await refit.GET('/v1/fine_tuning/jobs/{id}/metrics', { params: { path: { id } } })).data!.data.filter(
      (r) => !r.name.startsWith('batch_'),
    )
  const [a, b] = [await rows(straight.id), await rows(paused.id)]
  assert.deepEqual(
    b.map((r) => [r.step, r.epoch, r.name]),
    a.map((r) => [r.step, r.epoch, r.name]),
  )
  for (let i = 0; i < a.length; i++)
    assert.ok(Math.abs(a[i].value - b[i].value) <= 1e-6, `${a[i].name}: ${a[i].value} vs ${b[i].value}`)
})

test('models.retrieve / delete of the fine-tuned model', async () => {
  const model = await client.models.retrieve(job.fine_tuned_model!)
  assert.equal(model.id, job.fine_tuned_model)
  const deleted = await client.models.delete(job.fine_tuned_model!)
  assert.deepEqual(deleted, { id: job.fine_tuned_model, object: 'model', deleted: true })
  await assert.rejects(client.models.retrieve(job.fine_tuned_model!), OpenAI.NotFoundError)
})

test('errors: 400, 401, 404, 409 (not retried), 429 as the SDK classes', async () => {
  await assert.rejects(
    client.fineTuning.jobs.create({ model: 'mnist-cnn', training_file: 'file-doesnotexist' }),
    (err: unknown) => {
      assert.ok(err instanceof OpenAI.BadRequestError, String(err))
      assert.equal(err.code, 'invalid_training_file')
      assert.equal(err.param, 'training_file')
      return true
    },
  )
  await assert.rejects(sdk('rk-not-a-key', 0).models.list(), OpenAI.AuthenticationError)
  await assert.rejects(client.fineTuning.jobs.retrieve('ftjob-doesnotexist000000000000'), OpenAI.NotFoundError)

  // The SDK retries a 409 twice unless told not to: one request only.
  sent.length = 0
  await assert.rejects(client.fineTuning.jobs.cancel(job.id), (err: unknown) => {
    assert.ok(err instanceof OpenAI.ConflictError, String(err))
    assert.equal(err.code, 'job_not_cancellable')
    assert.equal(err.headers.get('x-should-retry'), 'false')
    return true
  })
  assert.deepEqual(sent, [`POST /v1/fine_tuning/jobs/${job.id}/cancel`])

  const limited = sdk(await projectKey('sdk-limited', 1), 0)
  const file = await limited.files.create({ file: await toFile(digits, 'd.zip'), purpose: 'fine-tune' })
  const first = await limited.fineTuning.jobs.create({ model: 'mnist-cnn', training_file: file.id })
  await assert.rejects(limited.fineTuning.jobs.create({ model: 'mnist-cnn', training_file: file.id }), (err) => {
    assert.ok(err instanceof OpenAI.RateLimitError, String(err))
    assert.equal(err.code, 'too_many_jobs')
    assert.ok(Number(err.headers.get('retry-after')) > 0)
    return true
  })
  await limited.fineTuning.jobs.cancel(first.id)
})
