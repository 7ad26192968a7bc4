// Fine-tuning job routes. No worker runs here, so nothing trains: files are validated by calling the
// worker's file processor directly, and queued jobs stay in the BullMQ queue where the test can see them.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Queue } from 'bullmq'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { QUEUES, redisConnection } from '../../src/queue/catalog.js'
import { bearer, buildTestApp, createProjectKey, createTestEnv, multipart, type TestEnv } from '../helpers/env.js'
import { fileProcessorFor } from '../helpers/file-processor.js'

let env: TestEnv
let app: FastifyInstance
let auth: { authorization: string }
let trainingQueue: Queue
let processFile: (fileId: string) => Promise<unknown>
let dataDir: string
let idxZip: Buffer
let idxFile: string
let csvFile: string
let badFile: string

before(async () => {
  env = await createTestEnv('jobs')
  app = await buildTestApp(env.config)
  auth = bearer((await createProjectKey(app, 'jobs')).key)
  trainingQueue = new Queue(QUEUES.training, {
    connection: redisConnection(env.config.redisUrl),
    prefix: env.config.queuePrefix,
  })
  processFile = fileProcessorFor(app)
  dataDir = await mkdtemp(join(tmpdir(), 'refit-jobs-data-'))
  const out = join(dataDir, 'digits-5-6.zip')
  const { rows } = await makeMnistDataset({ split: 'train', digits: [5, 6], format: 'idx', limit: 200, out })
  assert.equal(rows, 200)
  idxZip = await readFile(out)
  idxFile = await validatedFile('digits.zip', idxZip, 'processed')
  csvFile = await validatedFile('table.csv', CSV, 'processed')
  badFile = await validatedFile('bad.csv', BAD_CSV, 'error')
})
after(async () => {
  await trainingQueue?.close()
  await app?.close()
  await env?.cleanup()
  if (dataDir) await rm(dataDir, { recursive: true, force: true })
})

const CSV = ['x1,x2,label', '1,2,a', '3,4,b', '5,6,a', '7,8,b'].join('\n')
const BAD_CSV = ['x1,x2,label', '1,2,a', '3,oops,b'].join('\n')

async function uploadFile(name: string, content: Buffer | string) {
  const body = multipart({ purpose: 'fine-tune' }, { name, content: Buffer.from(content) })
  const res = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...auth, ...body.headers },
    payload: body.payload,
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json().id as string
}

async function getFile(id: string) {
  return (await app.inject({ url: `/v1/files/${id}`, headers: auth })).json()
}

/** Uploads and validates a file; returns its id once it is `processed` or `error`. */
async function validatedFile(name: string, content: Buffer | string, status: 'processed' | 'error') {
  const id = await uploadFile(name, content)
  await processFile(id)
  assert.equal((await getFile(id)).status, status)
  return id
}

const createJob = (payload: Record<string, unknown>) =>
  app.inject({ method: 'POST', url: '/v1/fine_tuning/jobs', headers: auth, payload })

const getJob = async (id: string) => (await app.inject({ url: `/v1/fine_tuning/jobs/${id}`, headers: auth })).json()

function expectError(res: LightMyRequestResponse, status: number, code: string, param: string | null) {
  assert.equal(res.statusCode, status, res.body)
  const { error } = res.json()
  assert.equal(error.code, code, res.body)
  assert.equal(error.param, param, res.body)
  assert.equal(error.request_id, res.headers['x-request-id'])
  return error
}

test('the fixture files validated as expected', async () => {
  const idx = await getFile(idxFile)
  assert.equal(idx.format, 'idx')
  assert.deepEqual(idx.stats, {
    rows: 200,
    classes: ['5', '6'],
    class_counts: idx.stats.class_counts,
    image_shape: [28, 28, 1],
  })
  assert.equal(idx.stats.class_counts[0] + idx.stats.class_counts[1], 200)
  assert.equal((await getFile(badFile)).error.code, 'invalid_csv')
})

test('an unknown body field: 400 invalid_request naming it', async () => {
  const res = await createJob({ model: 'mnist-cnn', training_file: idxFile, learning_rate: 0.1 })
  const error = expectError(res, 400, 'invalid_request', 'learning_rate')
  assert.deepEqual(error.details, [{ field: 'learning_rate', message: 'unknown field' }])

  const nested = await createJob({
    model: 'mnist-cnn',
    training_file: idxFile,
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 2, dropout: 0.5 } } },
  })
  expectError(nested, 400, 'invalid_request', 'method.transfer.hyperparameters.dropout')
})

test('missing required fields: 400 invalid_request naming them', async () => {
  const res = await createJob({ model: 'mnist-cnn' })
  expectError(res, 400, 'invalid_request', 'training_file')
})

test('an unknown method.type: 400 unsupported_method; distillation without a teacher: 400 naming it', async () => {
  const odd = await createJob({ model: 'mnist-cnn', training_file: idxFile, method: { type: 'magic' } })
  const error = expectError(odd, 400, 'unsupported_method', 'method.type')
  assert.match(error.message, /transfer, supervised or distillation/)
  const res = await createJob({ model: 'mnist-cnn', training_file: idxFile, method: { type: 'distillation' } })
  expectError(res, 400, 'invalid_request', 'method.distillation.teacher_model')
})

test('n_epochs 0: 400 invalid_request naming n_epochs, in both places it can be given', async () => {
  const top = await createJob({ model: 'mnist-cnn', training_file: idxFile, hyperparameters: { n_epochs: 0 } })
  expectError(top, 400, 'invalid_request', 'hyperparameters.n_epochs')
  const nested = await createJob({
    model: 'mnist-cnn',
    training_file: idxFile,
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 0 } } },
  })
  expectError(nested, 400, 'invalid_request', 'method.transfer.hyperparameters.n_epochs')
  const word = await createJob({ model: 'mnist-cnn', training_file: idxFile, hyperparameters: { n_epochs: 'many' } })
  expectError(word, 400, 'invalid_request', 'hyperparameters.n_epochs')
})

test('unknown model: 404 not_found, param model', async () => {
  const res = await createJob({ model: 'gpt-9', training_file: idxFile })
  const error = expectError(res, 404, 'not_found', 'model')
  assert.match(error.message, /gpt-9/)
})

test("unknown training or validation file: 400 invalid_training_file / invalid_validation_file (OpenAI's answer)", async () => {
  expectError(
    await createJob({ model: 'mnist-cnn', training_file: 'file-doesnotexist' }),
    400,
    'invalid_training_file',
    'training_file',
  )
  expectError(
    await createJob({ model: 'mnist-cnn', training_file: idxFile, validation_file: 'file-doesnotexist' }),
    400,
    'invalid_validation_file',
    'validation_file',
  )
})

test('a training file that failed validation: 400 file_not_ready', async () => {
  const res = await createJob({ model: 'mnist-cnn', training_file: badFile })
  const error = expectError(res, 400, 'file_not_ready', 'training_file')
  assert.match(error.message, new RegExp(badFile))
})

test('a CSV file for mnist-cnn: 400 incompatible_dataset', async () => {
  const res = await createJob({ model: 'mnist-cnn', training_file: csvFile })
  const error = expectError(res, 400, 'incompatible_dataset', 'training_file')
  assert.match(error.message, /tabular \(2 features\)/)
  const asValidation = await createJob({ model: 'mnist-cnn', training_file: idxFile, validation_file: csvFile })
  expectError(asValidation, 400, 'incompatible_dataset', 'validation_file')
})

test('suffix over 40 characters or with spaces, metadata with 17 keys: 400 invalid_request', async () => {
  const base = { model: 'mnist-cnn', training_file: idxFile }
  expectError(await createJob({ ...base, suffix: 'a'.repeat(41) }), 400, 'invalid_request', 'suffix')
  expectError(await createJob({ ...base, suffix: 'two words' }), 400, 'invalid_request', 'suffix')
  const metadata = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']))
  expectError(await createJob({ ...base, metadata }), 400, 'invalid_request', 'metadata')
  expectError(await createJob({ ...base, metadata: { k: 'v'.repeat(513) } }), 400, 'invalid_request', 'metadata.k')
  // the bounds themselves are fine
  const ok = await createJob({
    ...base,
    suffix: 'a'.repeat(40),
    metadata: Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v'])),
  })
  assert.equal(ok.statusCode, 200, ok.body)
  assert.equal(ok.json().suffix, 'a'.repeat(40))
  assert.equal(Object.keys(ok.json().metadata).length, 16)
  await cancel(ok.json().id)
})

test('a metadata key over 64 characters: 400 invalid_request naming metadata', {}, async () => {
  const res = await createJob({ model: 'mnist-cnn', training_file: idxFile, metadata: { ['k'.repeat(65)]: 'v' } })
  if (res.statusCode === 200) await cancel(res.json().id) // accepted by the bug: do not leave it queued
  assert.equal(res.statusCode, 400, res.body)
  assert.equal(res.json().error.code, 'invalid_request')
  assert.match(res.json().error.param, /^metadata/)
})

async function cancel(id: string) {
  const res = await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${id}/cancel`, headers: auth })
  assert.equal(res.statusCode, 200, res.body)
  return res.json()
}

test('a job on a processed file is queued at once with hyperparameters resolved; seed echoed', async () => {
  const res = await createJob({ model: 'mnist-cnn', training_file: idxFile, seed: 42, suffix: 'digits' })
  assert.equal(res.statusCode, 200, res.body)
  const job = res.json()
  assert.match(job.id, /^ftjob-[a-z0-9]{24}$/)
  assert.equal(job.object, 'fine_tuning.job')
  assert.equal(job.status, 'queued')
  assert.equal(job.model, 'mnist-cnn')
  assert.equal(job.training_file, idxFile)
  assert.equal(job.validation_file, null)
  assert.equal(job.seed, 42)
  assert.equal(job.suffix, 'digits')
  assert.equal(job.fine_tuned_model, null)
  assert.equal(job.error, null)
  // 200 rows: n_epochs 20, batch_size 16 (the documented "auto" rules)
  assert.deepEqual(job.hyperparameters, {
    n_epochs: 20,
    batch_size: 16,
    learning_rate: 0.001,
    learning_rate_multiplier: 1,
    validation_split: 0.1,
    optimizer: 'adam',
    early_stopping: null,
  })
  assert.deepEqual(job.method, {
    type: 'transfer',
    transfer: {
      head: { hidden_units: 128, dropout: 0.5 },
      unfreeze_top_blocks: 0,
      fine_tune: null,
      hyperparameters: job.hyperparameters,
    },
  })
  const queued = await trainingQueue.getJob(job.id)
  assert.ok(queued, 'the job is in the training queue')
  assert.deepEqual(queued.data, { jobId: job.id })
  await cancel(job.id)
})

test('explicit hyperparameters are kept; "auto" ones are resolved; without seed one is generated', async () => {
  const res = await createJob({
    model: 'mnist-cnn',
    training_file: idxFile,
    method: {
      type: 'transfer',
      transfer: { hyperparameters: { n_epochs: 3, batch_size: 'auto', learning_rate: 0.01 } },
    },
  })
  assert.equal(res.statusCode, 200, res.body)
  const job = res.json()
  assert.deepEqual(job.hyperparameters, {
    n_epochs: 3,
    batch_size: 16,
    learning_rate: 0.01,
    learning_rate_multiplier: 10,
    validation_split: 0.1,
    optimizer: 'adam',
    early_stopping: null,
  })
  assert.ok(Number.isInteger(job.seed) && job.seed >= 0 && job.seed < 2 ** 31, `seed ${job.seed}`)
  assert.equal((await getJob(job.id)).seed, job.seed)
  await cancel(job.id)
})

test('a job on a file still `uploaded` waits in validating_files, then is queued with numbers', async () => {
  const fileId = await uploadFile('later.zip', idxZip)
  assert.equal((await getFile(fileId)).status, 'uploaded')
  const res = await createJob({
    model: 'mnist-cnn',
    training_file: fileId,
    hyperparameters: { n_epochs: 'auto', learning_rate: 0.005 },
  })
  assert.equal(res.statusCode, 200, res.body)
  const waiting = res.json()
  assert.equal(waiting.status, 'validating_files')
  assert.equal(await trainingQueue.getJob(waiting.id), undefined, 'not queued before validation')

  // the file may not be deleted while the job needs it
  const del = await app.inject({ method: 'DELETE', url: `/v1/files/${fileId}`, headers: auth })
  expectError(del, 409, 'file_in_use', null)

  await processFile(fileId)
  const job = await getJob(waiting.id)
  assert.equal(job.status, 'queued')
  assert.deepEqual(job.hyperparameters, {
    n_epochs: 20,
    batch_size: 16,
    learning_rate: 0.005,
    learning_rate_multiplier: 5,
    validation_split: 0.1,
    optimizer: 'adam',
    early_stopping: null,
  })
  for (const k of ['n_epochs', 'batch_size', 'learning_rate', 'validation_split'])
    assert.equal(typeof job.hyperparameters[k], 'number', k)
  assert.ok(await trainingQueue.getJob(waiting.id), 'queued after validation')

  const events = await app.inject({ url: `/v1/fine_tuning/jobs/${waiting.id}/events`, headers: auth })
  assert.deepEqual(
    events.json().data.map((e: { message: string }) => e.message),
    [
      'Files validated; job queued',
      'Waiting for the training file to be validated',
      `Created transfer job ${waiting.id}`,
    ],
  )
  await cancel(waiting.id)
})

test('a job waiting on a file that fails validation fails with file_not_ready', async () => {
  const fileId = await uploadFile('later-bad.csv', BAD_CSV)
  const res = await createJob({ model: 'mnist-cnn', training_file: fileId })
  assert.equal(res.json().status, 'validating_files')
  await processFile(fileId)
  const job = await getJob(res.json().id)
  assert.equal(job.status, 'failed')
  assert.equal(job.error.code, 'file_not_ready')
  assert.equal(job.error.param, 'training_file')
  assert.equal(job.error.retryable, false, 'the same file fails the same way: clone and edit')
  assert.ok(job.finished_at)
  assert.equal(await trainingQueue.getJob(job.id), undefined)
})

test('a job waiting on a CSV for mnist-cnn fails with incompatible_dataset once the file is validated', async () => {
  const fileId = await uploadFile('later.csv', CSV)
  const res = await createJob({ model: 'mnist-cnn', training_file: fileId })
  assert.equal(res.json().status, 'validating_files')
  await processFile(fileId)
  const job = await getJob(res.json().id)
  assert.equal(job.status, 'failed')
  assert.deepEqual(job.error, {
    code: 'incompatible_dataset',
    message: job.error.message,
    param: 'training_file',
    retryable: false,
  })
  assert.match(job.error.message, /tabular/)
})

test('cancel of a queued job: cancelled and out of the queue; cancelling again is 409', async () => {
  const res = await createJob({ model: 'mnist-cnn', training_file: idxFile })
  const { id } = res.json()
  assert.equal(res.json().status, 'queued')
  assert.ok(await trainingQueue.getJob(id))

  const cancelled = await cancel(id)
  assert.equal(cancelled.id, id)
  assert.equal(cancelled.status, 'cancelled')
  assert.ok(cancelled.finished_at)
  assert.equal(await trainingQueue.getJob(id), undefined, 'removed from the queue')
  assert.equal((await getJob(id)).status, 'cancelled')

  const again = await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${id}/cancel`, headers: auth })
  const error = expectError(again, 409, 'job_not_cancellable', null)
  assert.match(error.message, /cancelled/)

  // a finished job no longer holds its file
  const fileId = await validatedFile('free.zip', idxZip, 'processed')
  const held = await createJob({ model: 'mnist-cnn', training_file: fileId })
  expectError(
    await app.inject({ method: 'DELETE', url: `/v1/files/${fileId}`, headers: auth }),
    409,
    'file_in_use',
    null,
  )
  await cancel(held.json().id)
  const del = await app.inject({ method: 'DELETE', url: `/v1/files/${fileId}`, headers: auth })
  assert.equal(del.statusCode, 200, del.body)
})

const post = (id: string, action: 'pause' | 'resume' | 'cancel') =>
  app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${id}/${action}`, headers: auth })

test('pause of a queued job: paused at once and out of the queue; resume queues it again; 409s', async () => {
  const { id } = (await createJob({ model: 'mnist-cnn', training_file: idxFile, seed: 7 })).json()
  assert.ok(await trainingQueue.getJob(id))
  const notPaused = await post(id, 'resume')
  assert.match(expectError(notPaused, 409, 'job_not_paused', null).message, /queued/)
  assert.equal(notPaused.headers['x-should-retry'], 'false')

  const paused = await post(id, 'pause')
  assert.equal(paused.statusCode, 200, paused.body)
  assert.equal(paused.json().status, 'paused')
  assert.equal(paused.json().finished_at, null)
  assert.equal(await trainingQueue.getJob(id), undefined, 'removed from the queue')
  // pausing again changes nothing
  const again = await post(id, 'pause')
  assert.equal(again.statusCode, 200, again.body)
  assert.equal(again.json().status, 'paused')

  const resumed = await post(id, 'resume')
  assert.equal(resumed.statusCode, 200, resumed.body)
  assert.equal(resumed.json().status, 'queued')
  assert.ok(await trainingQueue.getJob(id), 'back in the queue')

  const events = (await app.inject({ url: `/v1/fine_tuning/jobs/${id}/events`, headers: auth })).json()
  assert.deepEqual(
    events.data.slice(0, 2).map((e: { message: string }) => e.message),
    ['Job resumed: queued', 'Job paused before it started'],
  )

  await cancel(id)
  const terminal = await post(id, 'pause')
  assert.match(expectError(terminal, 409, 'job_not_pausable', null).message, /cancelled/)
  assert.equal(terminal.headers['x-should-retry'], 'false')
  expectError(await post(id, 'resume'), 409, 'job_not_paused', null)
})

test('pause while the files are validated: resume waits for them again, or queues at once when they are ready', async () => {
  const fileId = await uploadFile('pause-later.zip', idxZip)
  const waiting = (
    await createJob({ model: 'mnist-cnn', training_file: fileId, hyperparameters: { n_epochs: 2 } })
  ).json()
  assert.equal(waiting.status, 'validating_files')
  const paused = (await post(waiting.id, 'pause')).json()
  assert.equal(paused.status, 'paused')
  // validation ends while it is paused: it stays paused (and holds its file)
  await processFile(fileId)
  assert.equal((await getJob(waiting.id)).status, 'paused')
  expectError(
    await app.inject({ method: 'DELETE', url: `/v1/files/${fileId}`, headers: auth }),
    409,
    'file_in_use',
    null,
  )
  const resumed = (await post(waiting.id, 'resume')).json()
  assert.equal(resumed.status, 'queued')
  assert.equal(resumed.hyperparameters.n_epochs, 2)
  assert.equal(typeof resumed.hyperparameters.batch_size, 'number', 'auto values resolved')
  assert.ok(await trainingQueue.getJob(waiting.id))
  await cancel(waiting.id)
})

test('a paused job counts toward max_concurrent_jobs', async () => {
  const { key, projectId } = await createProjectKey(app, 'pause-slots')
  await app.db.project.update({ where: { id: projectId }, data: { maxConcurrentJobs: 1 } })
  const own = bearer(key)
  const body = multipart({ purpose: 'fine-tune' }, { name: 'd.zip', content: idxZip })
  const up = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...own, ...body.headers },
    payload: body.payload,
  })
  await processFile(up.json().id)
  const create = () =>
    app.inject({
      method: 'POST',
      url: '/v1/fine_tuning/jobs',
      headers: own,
      payload: { model: 'mnist-cnn', training_file: up.json().id },
    })
  const first = (await create()).json()
  const p = await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${first.id}/pause`, headers: own })
  assert.equal(p.json().status, 'paused')
  expectError(await create(), 429, 'too_many_jobs', null)
  const c = await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${first.id}/cancel`, headers: own })
  assert.equal(c.json().status, 'cancelled', 'a paused job is cancelled at once')
  assert.equal((await create()).statusCode, 200)
})

test('cancel and sub-resources of an unknown job: 404 not_found', async () => {
  for (const [method, suffix] of [
    ['GET', ''],
    ['POST', '/cancel'],
    ['POST', '/pause'],
    ['POST', '/resume'],
    ['GET', '/events'],
    ['GET', '/checkpoints'],
    ['GET', '/metrics'],
  ] as const) {
    const res = await app.inject({ method, url: `/v1/fine_tuning/jobs/ftjob-nope${suffix}`, headers: auth })
    expectError(res, 404, 'not_found', 'id')
  }
})

test('a new job has empty checkpoints and metrics lists', async () => {
  const { id } = (await createJob({ model: 'mnist-cnn', training_file: idxFile })).json()
  for (const sub of ['checkpoints', 'metrics']) {
    const res = await app.inject({ url: `/v1/fine_tuning/jobs/${id}/${sub}`, headers: auth })
    assert.equal(res.statusCode, 200, res.body)
    assert.deepEqual(res.json(), { object: 'list', data: [], has_more: false })
  }
  await cancel(id)
})

test('GET /v1/fine_tuning/jobs lists newest first and pages with after', async () => {
  const listAuth = bearer((await createProjectKey(app, 'jobs-list')).key)
  const body = multipart({ purpose: 'fine-tune' }, { name: 'digits.zip', content: idxZip })
  const up = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...listAuth, ...body.headers },
    payload: body.payload,
  })
  const fileId = up.json().id
  await processFile(fileId)
  const ids: string[] = []
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/fine_tuning/jobs',
      headers: listAuth,
      payload: { model: 'mnist-cnn', training_file: fileId, suffix: `n${i}` },
    })
    assert.equal(res.statusCode, 200, res.body)
    ids.push(res.json().id)
    await new Promise((r) => setTimeout(r, 5)) // distinct created_at (ms)
  }
  const all = await app.inject({ url: '/v1/fine_tuning/jobs', headers: listAuth })
  assert.equal(all.statusCode, 200)
  assert.deepEqual(
    all.json().data.map((j: { id: string }) => j.id),
    [ids[2], ids[1], ids[0]],
  )
  assert.equal(all.json().has_more, false)
  const page = await app.inject({ url: '/v1/fine_tuning/jobs?limit=2', headers: listAuth })
  assert.deepEqual(
    page.json().data.map((j: { id: string }) => j.id),
    [ids[2], ids[1]],
  )
  assert.equal(page.json().has_more, true)
  const rest = await app.inject({ url: `/v1/fine_tuning/jobs?limit=2&after=${ids[1]}`, headers: listAuth })
  assert.deepEqual(
    rest.json().data.map((j: { id: string }) => j.id),
    [ids[0]],
  )
  assert.equal(rest.json().has_more, false)
})
