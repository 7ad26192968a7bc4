// What the OpenAI SDKs send and expect, at the route level (app.inject, no worker: files are validated by
// calling the worker's file processor, jobs stay queued). The SDKs themselves are driven in
// test/clients/openai-sdk*.test.ts.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { deleteExpiredFiles } from '../../src/modules/files/files-service.js'
import { bearer, buildTestApp, createProjectKey, createTestEnv, multipart, type TestEnv } from '../helpers/env.js'
import { fileProcessorFor } from '../helpers/file-processor.js'

let env: TestEnv
let app: FastifyInstance
let auth: { authorization: string }
let processFile: (fileId: string) => Promise<unknown>
let dataDir: string
let idxFile: string
let tableFile: string

const TABLE = ['x1,x2,label', '1,2,a', '3,4,b', '5,6,a', '7,8,b'].join('\n')

before(async () => {
  env = await createTestEnv('openai_compat', { MAX_CONCURRENT_JOBS: '1000' })
  app = await buildTestApp(env.config)
  auth = bearer((await createProjectKey(app, 'compat')).key)
  processFile = fileProcessorFor(app)
  dataDir = await mkdtemp(join(tmpdir(), 'refit-compat-'))
  const out = join(dataDir, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6], format: 'idx', limit: 100, out })
  idxFile = await upload('digits.zip', await readFile(out))
  tableFile = await upload('table.csv', TABLE)
  for (const id of [idxFile, tableFile]) await processFile(id)
})
after(async () => {
  await app?.close()
  await env?.cleanup()
  if (dataDir) await rm(dataDir, { recursive: true, force: true })
})

async function upload(name: string, content: Buffer | string, fields: Record<string, string> = {}) {
  const res = await uploadRaw(name, content, fields)
  assert.equal(res.statusCode, 201, res.body)
  return res.json().id as string
}

async function uploadRaw(name: string, content: Buffer | string, fields: Record<string, string> = {}) {
  const body = multipart({ purpose: 'fine-tune', ...fields }, { name, content: Buffer.from(content) })
  return app.inject({ method: 'POST', url: '/v1/files', headers: { ...auth, ...body.headers }, payload: body.payload })
}

const createJob = (payload: object) =>
  app.inject({ method: 'POST', url: '/v1/fine_tuning/jobs', headers: auth, payload })

function expectError(res: LightMyRequestResponse, status: number, code: string, param?: string | null) {
  assert.equal(res.statusCode, status, res.body)
  const { error } = res.json()
  assert.equal(error.code, code, res.body)
  if (param !== undefined) assert.equal(error.param, param, res.body)
  return error as { message: string; param: string | null }
}

/** What the Python SDK sends on a call without a body. */
const emptyJson = { 'content-type': 'application/json' }

test('an empty body with Content-Type: application/json is no body on every body-less POST and DELETE', async () => {
  const job = (await createJob({ model: 'mnist-cnn', training_file: idxFile })).json()
  const cancelled = await app.inject({
    method: 'POST',
    url: `/v1/fine_tuning/jobs/${job.id}/cancel`,
    headers: { ...auth, ...emptyJson },
    payload: '',
  })
  assert.equal(cancelled.statusCode, 200, cancelled.body)
  assert.equal(cancelled.json().status, 'cancelled')
  const retried = await app.inject({
    method: 'POST',
    url: `/v1/fine_tuning/jobs/${job.id}/retry`,
    headers: { ...auth, ...emptyJson },
    payload: '',
  })
  assert.equal(retried.statusCode, 200, retried.body)
  await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${retried.json().id}/cancel`, headers: auth })

  const spare = await upload('spare.csv', TABLE)
  const deleted = await app.inject({
    method: 'DELETE',
    url: `/v1/files/${spare}`,
    headers: { ...auth, ...emptyJson },
    payload: '',
  })
  assert.equal(deleted.statusCode, 200, deleted.body)
  assert.deepEqual(deleted.json(), { id: spare, object: 'file', deleted: true })
  // A model route answers from its own rules, not with invalid_json.
  const builtin = await app.inject({
    method: 'DELETE',
    url: '/v1/models/mnist-cnn',
    headers: { ...auth, ...emptyJson },
    payload: '',
  })
  expectError(builtin, 400, 'builtin_model_immutable')

  // A route that needs a body still says so, from its schema; broken JSON is still invalid_json.
  const noBody = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: { ...auth, ...emptyJson },
    payload: '',
  })
  expectError(noBody, 400, 'invalid_request')
  const broken = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: { ...auth, ...emptyJson },
    payload: '{"model":',
  })
  expectError(broken, 400, 'invalid_json')
})

test('explicit nulls for the nullable create parameters, integrations [] or null; other integrations refused', async () => {
  const res = await createJob({
    model: 'mnist-cnn',
    training_file: idxFile,
    validation_file: null,
    suffix: null,
    seed: null,
    metadata: null,
    integrations: null,
  })
  assert.equal(res.statusCode, 200, res.body)
  const job = res.json()
  assert.equal(job.validation_file, null)
  assert.equal(job.suffix, null)
  assert.equal(job.metadata, null)
  assert.ok(Number.isInteger(job.seed), 'a seed is generated for seed: null')
  assert.deepEqual(job.integrations, [])
  assert.match(job.fine_tuned_model ?? 'ft:mnist-cnn:refit:', /^ft:mnist-cnn:refit:/)
  const empty = await createJob({ model: 'mnist-cnn', training_file: idxFile, integrations: [] })
  assert.equal(empty.statusCode, 200, empty.body)
  const wandb = await createJob({
    model: 'mnist-cnn',
    training_file: idxFile,
    integrations: [{ type: 'wandb', wandb: { project: 'p' } }],
  })
  const error = expectError(wandb, 400, 'integrations_not_supported', 'integrations')
  assert.match(error.message, /\[\] or null/)
  for (const id of [job.id, empty.json().id])
    await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${id}/cancel`, headers: auth })
})

test('learning_rate_multiplier multiplies 0.001 in every method and is echoed with learning_rate', async () => {
  const top = await createJob({
    model: 'mnist-cnn',
    training_file: idxFile,
    hyperparameters: { n_epochs: 1, learning_rate_multiplier: 2 },
  })
  assert.equal(top.statusCode, 200, top.body)
  assert.equal(top.json().hyperparameters.learning_rate, 0.002)
  assert.equal(top.json().hyperparameters.learning_rate_multiplier, 2)
  assert.equal(top.json().method.type, 'transfer', 'the legacy form on a pretrained model transfers')

  const supervised = await createJob({
    model: 'mlp-small',
    training_file: tableFile,
    method: { type: 'supervised', supervised: { hyperparameters: { learning_rate_multiplier: 0.5 } } },
  })
  assert.equal(supervised.statusCode, 200, supervised.body)
  const hp = supervised.json().method.supervised.hyperparameters
  assert.equal(hp.learning_rate, 0.0005)
  assert.equal(hp.learning_rate_multiplier, 0.5)

  // The fine-tuning phase's auto rate stays a tenth of the resolved rate.
  const fine = await createJob({
    model: 'mnist-cnn',
    training_file: idxFile,
    method: {
      type: 'transfer',
      transfer: {
        hyperparameters: { learning_rate_multiplier: 3 },
        unfreeze_top_blocks: 1,
        fine_tune: { n_epochs: 1 },
      },
    },
  })
  assert.equal(fine.statusCode, 200, fine.body)
  assert.equal(fine.json().method.transfer.fine_tune.learning_rate, 0.0003)

  const auto = await createJob({
    model: 'mnist-cnn',
    training_file: idxFile,
    hyperparameters: { learning_rate_multiplier: 'auto' },
  })
  assert.equal(auto.statusCode, 200, auto.body)
  assert.equal(auto.json().hyperparameters.learning_rate, 0.001)
  assert.equal(auto.json().hyperparameters.learning_rate_multiplier, 1)

  const both = await createJob({
    model: 'mnist-cnn',
    training_file: idxFile,
    hyperparameters: { learning_rate: 0.01, learning_rate_multiplier: 2 },
  })
  expectError(both, 400, 'invalid_hyperparameter', 'hyperparameters.learning_rate_multiplier')

  // A retried job keeps its rate (the echoed multiplier does not conflict with it).
  await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${top.json().id}/cancel`, headers: auth })
  const retry = await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${top.json().id}/retry`, headers: auth })
  assert.equal(retry.statusCode, 200, retry.body)
  assert.equal(retry.json().hyperparameters.learning_rate, 0.002)
  for (const id of [supervised.json().id, fine.json().id, auto.json().id, retry.json().id])
    await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${id}/cancel`, headers: auth })
})

test('without a method, an architecture preset trains supervised and every other model transfers', async () => {
  const preset = await createJob({ model: 'mlp-small', training_file: tableFile, hyperparameters: { n_epochs: 2 } })
  assert.equal(preset.statusCode, 200, preset.body)
  assert.equal(preset.json().method.type, 'supervised')
  assert.equal(preset.json().hyperparameters.n_epochs, 2)
  const pretrained = await createJob({ model: 'mnist-cnn', training_file: idxFile })
  assert.equal(pretrained.json().method.type, 'transfer')
  for (const id of [preset.json().id, pretrained.json().id])
    await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${id}/cancel`, headers: auth })
})

test('a missing, deleted or non-dataset training_file is 400 invalid_training_file with param', async () => {
  const gone = await upload('gone.csv', TABLE)
  await app.inject({ method: 'DELETE', url: `/v1/files/${gone}`, headers: auth })
  const missing = await createJob({ model: 'mlp-small', training_file: 'file-doesnotexist' })
  const deleted = await createJob({ model: 'mlp-small', training_file: gone })
  const a = expectError(missing, 400, 'invalid_training_file', 'training_file')
  const b = expectError(deleted, 400, 'invalid_training_file', 'training_file')
  assert.equal(a.message.replace('file-doesnotexist', 'X'), b.message.replace(gone, 'X'), 'one answer for both')
  const validation = await createJob({ model: 'mlp-small', training_file: tableFile, validation_file: gone })
  expectError(validation, 400, 'invalid_validation_file', 'validation_file')

  // A job's result CSV is a file too, but not a dataset to train on.
  const results = await app.db.file.create({
    data: {
      id: 'file-resultsresultsresults00',
      projectId: (await app.db.file.findUniqueOrThrow({ where: { id: tableFile } })).projectId,
      filename: 'r.csv',
      purpose: 'fine-tune-results',
      bytes: 1n,
      sha256: '',
      status: 'processed',
    },
  })
  const error = expectError(
    await createJob({ model: 'mlp-small', training_file: results.id }),
    400,
    'invalid_training_file',
    'training_file',
  )
  assert.match(error.message, /fine-tune-results/)
})

test('files.list takes purpose, order, limit (up to 10,000) and after', async () => {
  const all = (await app.inject({ url: '/v1/files?limit=10000', headers: auth })).json()
  assert.ok(all.data.length >= 3)
  const ids = all.data.map((f: { id: string }) => f.id)
  const asc = (await app.inject({ url: '/v1/files?order=asc&limit=10000', headers: auth })).json()
  assert.deepEqual(
    asc.data.map((f: { id: string }) => f.id),
    [...ids].reverse(),
  )
  // Oldest-first pages continue after the cursor in that order.
  const page1 = (await app.inject({ url: '/v1/files?order=asc&limit=1', headers: auth })).json()
  const page2 = (
    await app.inject({ url: `/v1/files?order=asc&limit=1&after=${page1.data[0].id}`, headers: auth })
  ).json()
  assert.deepEqual(
    [page1.data[0].id, page2.data[0].id],
    asc.data.slice(0, 2).map((f: { id: string }) => f.id),
  )
  assert.equal(page1.has_more, true)
  const tuned = (await app.inject({ url: '/v1/files?purpose=fine-tune', headers: auth })).json()
  assert.ok(tuned.data.length > 0 && tuned.data.every((f: { purpose: string }) => f.purpose === 'fine-tune'))
  const none = (await app.inject({ url: '/v1/files?purpose=batch', headers: auth })).json()
  assert.deepEqual(none.data, [])
  expectError(await app.inject({ url: '/v1/files?limit=10001', headers: auth }), 400, 'invalid_request')
  expectError(await app.inject({ url: '/v1/files?order=sideways', headers: auth }), 400, 'invalid_request')
})

test('jobs.list filters on metadata[k]=v (every pair given)', async () => {
  const a = (
    await createJob({ model: 'mnist-cnn', training_file: idxFile, metadata: { run: 'e2e', team: 'x' } })
  ).json()
  const b = (await createJob({ model: 'mnist-cnn', training_file: idxFile, metadata: { run: 'e2e' } })).json()
  await createJob({ model: 'mnist-cnn', training_file: idxFile, metadata: { run: 'other' } })
  const list = async (q: string) =>
    (await app.inject({ url: `/v1/fine_tuning/jobs?${q}`, headers: auth })).json().data.map((j: { id: string }) => j.id)
  assert.deepEqual(await list('metadata%5Brun%5D=e2e'), [b.id, a.id])
  assert.deepEqual(await list('metadata[run]=e2e&metadata[team]=x'), [a.id])
  assert.deepEqual(await list('metadata[run]=nope'), [])
  expectError(await app.inject({ url: '/v1/fine_tuning/jobs?colour=red', headers: auth }), 400, 'invalid_request')
  for (const j of await app.db.fineTuningJob.findMany({ where: { status: 'queued' } }))
    await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${j.id}/cancel`, headers: auth })
})

test('expires_after on upload sets expires_at; the sweep deletes an expired file once no unfinished job uses it', async () => {
  const res = await uploadRaw('expiring.csv', TABLE, {
    'expires_after[anchor]': 'created_at',
    'expires_after[seconds]': '3600',
  })
  assert.equal(res.statusCode, 201, res.body)
  const file = res.json()
  assert.equal(file.expires_at, file.created_at + 3600)
  assert.equal((await app.inject({ url: `/v1/files/${file.id}`, headers: auth })).json().expires_at, file.expires_at)
  const plain = (await app.inject({ url: `/v1/files/${tableFile}`, headers: auth })).json()
  assert.equal(plain.expires_at, null)

  for (const [fields, param] of [
    [{ 'expires_after[anchor]': 'last_active_at', 'expires_after[seconds]': '3600' }, 'expires_after[anchor]'],
    [{ 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '60' }, 'expires_after[seconds]'],
    [{ 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '2592001' }, 'expires_after[seconds]'],
    [{ 'expires_after[anchor]': 'created_at' }, 'expires_after[seconds]'],
  ] as const)
    expectError(await uploadRaw('x.csv', TABLE, fields), 400, 'invalid_field', param)

  await processFile(file.id)
  const job = (await createJob({ model: 'mlp-small', training_file: file.id })).json()
  // An hour later (moved in the database rather than waited for):
  await app.db.file.update({ where: { id: file.id }, data: { expiresAt: new Date(Date.now() - 1000) } })
  const deps = { db: app.db, storage: app.storage }
  assert.equal(await deleteExpiredFiles(deps), 0, 'a queued job uses it: deletion waits')
  assert.equal((await app.inject({ url: `/v1/files/${file.id}`, headers: auth })).statusCode, 200)
  await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${job.id}/cancel`, headers: auth })
  assert.equal(await deleteExpiredFiles(deps), 1)
  expectError(await app.inject({ url: `/v1/files/${file.id}`, headers: auth }), 404, 'not_found')
  const row = await app.db.file.findUniqueOrThrow({ where: { id: file.id } })
  assert.equal(row.storagePath, null, 'the bytes are gone')
})

test('GET /v1/files/{id}/content streams the bytes as uploaded', async () => {
  const res = await app.inject({ url: `/v1/files/${tableFile}/content`, headers: auth })
  assert.equal(res.statusCode, 200)
  assert.equal(res.body, TABLE)
  assert.equal(res.headers['content-type'], 'application/octet-stream')
  expectError(await app.inject({ url: '/v1/files/file-nope/content', headers: auth }), 404, 'not_found')
})

test('chat-format JSONL ends in chat_format_not_supported, saying what Refit trains', async () => {
  const chat = [
    {
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: 'hello' },
      ],
    },
    {
      messages: [
        { role: 'user', content: 'bye' },
        { role: 'assistant', content: 'ciao' },
      ],
    },
  ]
    .map((l) => JSON.stringify(l))
    .join('\n')
  const id = await upload('chat.jsonl', chat)
  await processFile(id)
  const file = (await app.inject({ url: `/v1/files/${id}`, headers: auth })).json()
  assert.equal(file.status, 'error')
  assert.equal(file.error.code, 'chat_format_not_supported')
  assert.match(file.status_details, /classifiers/)
  assert.match(file.status_details, /"features"/)
  assert.equal(file.error.details.length, 1, 'one clear error, not one per line')
  const legacy = await upload('prompt.jsonl', '{"prompt": "a", "completion": "b"}\n')
  await processFile(legacy)
  assert.equal(
    (await app.inject({ url: `/v1/files/${legacy}`, headers: auth })).json().error.code,
    'chat_format_not_supported',
  )
})

test('non-transient 409s carry x-should-retry: false', async () => {
  const job = (await createJob({ model: 'mnist-cnn', training_file: idxFile })).json()
  const busy = await app.inject({ method: 'DELETE', url: `/v1/files/${idxFile}`, headers: auth })
  expectError(busy, 409, 'file_in_use')
  assert.equal(busy.headers['x-should-retry'], 'false')
  await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${job.id}/cancel`, headers: auth })
  const again = await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${job.id}/cancel`, headers: auth })
  expectError(again, 409, 'job_not_cancellable')
  assert.equal(again.headers['x-should-retry'], 'false')
  const ok = await app.inject({ url: `/v1/fine_tuning/jobs/${job.id}`, headers: auth })
  assert.equal(ok.headers['x-should-retry'], undefined)
})
