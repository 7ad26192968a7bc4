// Uploads through the API with a worker running in this process, so validation really happens: a good
// file becomes `processed` with its stats, a bad one `error` with the line at fault and no bytes left.
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
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

let env: TestEnv
let app: FastifyInstance
let worker: WorkerHandle
let auth: { authorization: string }

before(async () => {
  env = await createTestEnv('files')
  app = await buildTestApp(env.config)
  worker = await startWorker(env.config, { reconcileEveryMs: 500 })
  auth = bearer((await createProjectKey(app, 'files')).key)
})
after(async () => {
  await worker?.close()
  await app?.close()
  await env?.cleanup()
})

const GOOD_CSV = ['x1,x2,label', '1,2,cat', '3,4,dog', '5.5,-6,cat', '7,8e2,bird', '0,0,cat'].join('\n')

// Line 7 (header is line 1) has "abc" in column x2; everything else is fine.
const BAD_CSV = ['x1,x2,label', '1,2,a', '3,4,b', '5,6,a', '7,8,b', '9,10,a', '11,abc,b', '13,14,a'].join('\n')

async function upload(
  fields: Record<string, string>,
  file?: { name: string; content: Buffer | string; field?: string },
  headers = auth,
  instance = app,
) {
  const body = multipart(
    fields,
    file
      ? { ...file, content: typeof file.content === 'string' ? Buffer.from(file.content) : file.content }
      : undefined,
  )
  return instance.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...headers, ...body.headers },
    payload: body.payload,
  })
}

function expectError(res: LightMyRequestResponse, status: number, code: string, param: string | null) {
  assert.equal(res.statusCode, status, res.body)
  const { error } = res.json()
  assert.equal(error.code, code, res.body)
  assert.equal(error.param, param, res.body)
  assert.equal(error.request_id, res.headers['x-request-id'])
}

const storedFiles = (root = env.config.storageDir) => readdir(join(root, 'files'))
const tmpFiles = (root = env.config.storageDir) => readdir(join(root, 'tmp'))

async function waitForStatus(id: string, status: string) {
  return waitFor(
    async () => {
      const res = await app.inject({ url: `/v1/files/${id}`, headers: auth })
      const file = res.json()
      return file.status === status ? file : null
    },
    20_000,
    `file ${id} to become ${status}`,
  )
}

test('a good CSV is stored, then validated to `processed` with exact stats', async () => {
  const res = await upload({ purpose: 'fine-tune' }, { name: 'good.csv', content: GOOD_CSV })
  assert.equal(res.statusCode, 201, res.body)
  const created = res.json()
  assert.match(created.id, /^file-[a-z0-9]{24}$/)
  assert.deepEqual(
    { ...created, created_at: 0 },
    {
      id: created.id,
      object: 'file',
      bytes: Buffer.byteLength(GOOD_CSV),
      created_at: 0,
      filename: 'good.csv',
      purpose: 'fine-tune',
      format: null,
      status: 'uploaded',
      status_details: null,
      error: null,
      stats: null,
      expires_at: null,
    },
  )
  assert.ok(Math.abs(created.created_at - Date.now() / 1000) < 60)
  // the bytes on disk are exactly the upload
  assert.equal(await readFile(join(env.config.storageDir, 'files', created.id), 'utf8'), GOOD_CSV)

  const processed = await waitForStatus(created.id, 'processed')
  assert.equal(processed.format, 'csv')
  assert.equal(processed.error, null)
  assert.equal(processed.status_details, null)
  assert.deepEqual(processed.stats, {
    rows: 5,
    classes: ['bird', 'cat', 'dog'],
    class_counts: [1, 3, 1],
    feature_count: 2,
  })
})

test('a CSV with a non-numeric cell at line 7 becomes `error` naming line 7 and column x2, and its bytes go', async () => {
  const res = await upload({ purpose: 'fine-tune', format: 'csv' }, { name: 'bad.csv', content: BAD_CSV })
  assert.equal(res.statusCode, 201, res.body)
  const { id } = res.json()
  assert.deepEqual(await storedFiles().then((f) => f.includes(id)), true)

  const failed = await waitForStatus(id, 'error')
  assert.equal(failed.error.code, 'invalid_csv')
  assert.deepEqual(failed.error.details, [{ line: 7, field: 'x2', message: '"abc" is not a number' }])
  assert.match(failed.error.message, /line 7, column x2: "abc" is not a number/)
  assert.equal(failed.status_details, failed.error.message)
  assert.equal(failed.stats, null)
  assert.equal(failed.bytes, Buffer.byteLength(BAD_CSV))

  assert.ok(!(await storedFiles()).includes(id), 'the rejected bytes were removed')
  assert.deepEqual(await tmpFiles(), [])
})

test('purpose other than fine-tune: 400 invalid_purpose, param purpose, nothing stored', async () => {
  const before = await storedFiles()
  for (const fields of [{ purpose: 'assistants' }, {}] as Record<string, string>[]) {
    const res = await upload(fields, { name: 'good.csv', content: GOOD_CSV })
    expectError(res, 400, 'invalid_purpose', 'purpose')
  }
  // purpose after the file part: the bytes are already written when the field is read, and must go
  const boundary = '----refitfilefirst'
  const payload = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="good.csv"\r\n` +
      `Content-Type: text/csv\r\n\r\n${GOOD_CSV}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--${boundary}--\r\n`,
  )
  const res = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...auth, 'content-type': `multipart/form-data; boundary=${boundary}` },
    payload,
  })
  expectError(res, 400, 'invalid_purpose', 'purpose')
  assert.deepEqual(await storedFiles(), before)
  assert.deepEqual(await tmpFiles(), [])
  const list = await app.inject({ url: '/v1/files?limit=100', headers: auth })
  assert.equal(list.json().data.filter((f: { filename: string }) => f.filename === 'good.csv').length, 1)
})

test('no file part: 400 missing_file', async () => {
  const res = await upload({ purpose: 'fine-tune' })
  expectError(res, 400, 'missing_file', 'file')
})

test('a file in another field than `file`: 400 invalid_request naming the field', async () => {
  const res = await upload({ purpose: 'fine-tune' }, { name: 'good.csv', content: GOOD_CSV, field: 'data' })
  expectError(res, 400, 'invalid_request', 'data')
  assert.deepEqual(await tmpFiles(), [])
})

test('two file parts: 400 invalid_request, and the first one is not kept', async () => {
  const before = await storedFiles()
  const boundary = '----refittwofiles'
  const part = (name: string) =>
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\n\r\n${GOOD_CSV}\r\n`
  const res = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...auth, 'content-type': `multipart/form-data; boundary=${boundary}` },
    payload: `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n${part('a.csv')}${part('b.csv')}--${boundary}--\r\n`,
  })
  assert.equal(res.statusCode, 400, res.body)
  assert.equal(res.json().error.code, 'invalid_request')
  assert.deepEqual(await storedFiles(), before)
  assert.deepEqual(await tmpFiles(), [])
})

test('label_column picks the label; a bad one is 400 invalid_field', async () => {
  const csv = ['y,a,b', '1,0.5,2', '0,1.5,3', '1,2.5,4'].join('\n')
  const res = await upload({ purpose: 'fine-tune', label_column: 'y' }, { name: 'y.csv', content: csv })
  assert.equal(res.statusCode, 201, res.body)
  const processed = await waitForStatus(res.json().id, 'processed')
  assert.deepEqual(processed.stats, { rows: 3, classes: ['0', '1'], class_counts: [1, 2], feature_count: 2 })

  // without it, the default `label` column is missing: a located error
  const noLabel = await upload({ purpose: 'fine-tune' }, { name: 'y.csv', content: csv })
  const failed = await waitForStatus(noLabel.json().id, 'error')
  assert.equal(failed.error.code, 'invalid_csv')
  assert.equal(failed.error.details[0].line, 1)
  assert.equal(failed.error.details[0].field, 'label')

  const bad = await upload({ purpose: 'fine-tune', label_column: 'a,b' }, { name: 'y.csv', content: csv })
  expectError(bad, 400, 'invalid_field', 'label_column')
})

test('unknown format: 400 invalid_format, param format, nothing stored', async () => {
  const before = await storedFiles()
  const res = await upload({ purpose: 'fine-tune', format: 'parquet' }, { name: 'good.csv', content: GOOD_CSV })
  expectError(res, 400, 'invalid_format', 'format')
  assert.match(res.json().error.message, /parquet/)
  assert.deepEqual(await storedFiles(), before)
})

test('an unknown multipart field: 400 invalid_field naming it', async () => {
  const res = await upload({ purpose: 'fine-tune', colour: 'blue' }, { name: 'good.csv', content: GOOD_CSV })
  expectError(res, 400, 'invalid_field', 'colour')
})

test('an empty file: 400 invalid_request, param file', async () => {
  const res = await upload({ purpose: 'fine-tune' }, { name: 'empty.csv', content: '' })
  expectError(res, 400, 'invalid_request', 'file')
})

test('a JSON body instead of multipart: 415 unsupported_media_type', async () => {
  const res = await app.inject({ method: 'POST', url: '/v1/files', headers: auth, payload: { purpose: 'fine-tune' } })
  expectError(res, 415, 'unsupported_media_type', null)
})

test('an upload over MAX_UPLOAD_BYTES: 413 file_too_large and no bytes left', async (t) => {
  const small = await createTestEnv('files_small', { MAX_UPLOAD_BYTES: '2048' })
  const smallApp = await buildTestApp(small.config)
  t.after(async () => {
    await smallApp.close()
    await small.cleanup()
  })
  const smallAuth = bearer((await createProjectKey(smallApp, 'small')).key)
  const rows = ['x1,x2,label']
  for (let i = 0; rows.join('\n').length < 10_000; i++) rows.push(`${i},${i * 2},${i % 2 ? 'a' : 'b'}`)
  const big = rows.join('\n')

  const res = await upload({ purpose: 'fine-tune' }, { name: 'big.csv', content: big }, smallAuth, smallApp)
  expectError(res, 413, 'file_too_large', null)
  assert.deepEqual(await storedFiles(small.config.storageDir), [])
  assert.deepEqual(await tmpFiles(small.config.storageDir), [])
  const list = await smallApp.inject({ url: '/v1/files', headers: smallAuth })
  assert.deepEqual(list.json().data, [])

  // the limit itself is accepted, one byte more is not
  const fits = await upload(
    { purpose: 'fine-tune' },
    { name: 'fits.csv', content: big.slice(0, 2048) },
    smallAuth,
    smallApp,
  )
  assert.equal(fits.statusCode, 201, fits.body)
  assert.equal(fits.json().bytes, 2048)
  const over = await upload(
    { purpose: 'fine-tune' },
    { name: 'over.csv', content: big.slice(0, 2049) },
    smallAuth,
    smallApp,
  )
  expectError(over, 413, 'file_too_large', null)
  assert.deepEqual(await storedFiles(small.config.storageDir), [fits.json().id])
  assert.deepEqual(await tmpFiles(small.config.storageDir), [])
})

test('DELETE removes the bytes; GET and a second DELETE are then 404', async () => {
  const res = await upload({ purpose: 'fine-tune' }, { name: 'gone.csv', content: GOOD_CSV })
  const { id } = res.json()
  await waitForStatus(id, 'processed')
  assert.ok((await storedFiles()).includes(id))

  const del = await app.inject({ method: 'DELETE', url: `/v1/files/${id}`, headers: auth })
  assert.equal(del.statusCode, 200, del.body)
  assert.deepEqual(del.json(), { id, object: 'file', deleted: true })
  assert.ok(!(await storedFiles()).includes(id))

  const get = await app.inject({ url: `/v1/files/${id}`, headers: auth })
  expectError(get, 404, 'not_found', 'id')
  const again = await app.inject({ method: 'DELETE', url: `/v1/files/${id}`, headers: auth })
  expectError(again, 404, 'not_found', 'id')
  const list = await app.inject({ url: '/v1/files?limit=100', headers: auth })
  assert.ok(!list.json().data.some((f: { id: string }) => f.id === id))
})

test('pagination: newest first, limit and after', async () => {
  // a project of its own, so the other tests' files do not interleave
  const pageAuth = bearer((await createProjectKey(app, 'pages')).key)
  const ids: string[] = []
  for (const name of ['one.csv', 'two.csv', 'three.csv']) {
    const res = await upload({ purpose: 'fine-tune' }, { name, content: GOOD_CSV }, pageAuth)
    assert.equal(res.statusCode, 201, res.body)
    ids.push(res.json().id)
    await new Promise((r) => setTimeout(r, 5)) // distinct created_at (ms) so the order is the upload order
  }
  const first = await app.inject({ url: '/v1/files?limit=2', headers: pageAuth })
  assert.equal(first.statusCode, 200)
  assert.equal(first.json().object, 'list')
  assert.deepEqual(
    first.json().data.map((f: { id: string }) => f.id),
    [ids[2], ids[1]],
  )
  assert.equal(first.json().has_more, true)

  const second = await app.inject({ url: `/v1/files?limit=2&after=${ids[1]}`, headers: pageAuth })
  assert.deepEqual(
    second.json().data.map((f: { id: string }) => f.id),
    [ids[0]],
  )
  assert.equal(second.json().has_more, false)

  const all = await app.inject({ url: '/v1/files', headers: pageAuth })
  assert.deepEqual(
    all.json().data.map((f: { id: string }) => f.id),
    [ids[2], ids[1], ids[0]],
  )
  assert.equal(all.json().has_more, false)

  for (const q of ['limit=0', 'limit=10001', 'limit=abc', 'colour=red']) {
    const bad = await app.inject({ url: `/v1/files?${q}`, headers: pageAuth })
    assert.equal(bad.statusCode, 400, `${q}: ${bad.body}`)
    assert.equal(bad.json().error.code, 'invalid_request')
    assert.equal(bad.json().error.param, q.startsWith('colour') ? 'querystring.colour' : 'querystring.limit')
  }
})
