// Hostile uploads (OWASP API4/API8): each fixture is refused with an exact code and details, and
// afterwards nothing of it is left: no bytes under <storage>/files or <storage>/tmp, the file row (if
// any) in `error`, no validation job waiting in BullMQ, and the worker (in-process) still validating.
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { createDb, type Db } from '../../src/db/client.js'
import { startWorker, type WorkerHandle } from '../../workers/worker.js'
import { FIXTURES, tooManyEntriesZip } from '../fixtures/security/make-fixtures.js'
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
let db: Db
let auth: { authorization: string }

before(async () => {
  env = await createTestEnv('sec_uploads')
  app = await buildTestApp(env.config)
  worker = await startWorker(env.config, { reconcileEveryMs: 500 })
  db = createDb(env.config.databaseUrl, 2)
  auth = bearer((await createProjectKey(app, 'uploads')).key)
})
after(async () => {
  await worker?.close()
  await app?.close()
  await db?.$disconnect()
  await env?.cleanup()
})

async function upload(content: Buffer, name: string, fields: Record<string, string> = { purpose: 'fine-tune' }) {
  const body = multipart(fields, { name, content })
  return app.inject({ method: 'POST', url: '/v1/files', headers: { ...auth, ...body.headers }, payload: body.payload })
}

interface FileError {
  code: string
  message: string
  details?: { line?: number; entry?: string; field?: string; message: string }[]
}

/** Uploads, waits for the worker's verdict, and checks that nothing of the file is left behind. */
async function rejected(content: Buffer, name: string, fields?: Record<string, string>): Promise<FileError> {
  const res = await upload(content, name, fields)
  assert.equal(res.statusCode, 201, res.body)
  const id = res.json().id as string
  const file = await waitFor(
    async () => {
      const f = (await app.inject({ url: `/v1/files/${id}`, headers: auth })).json()
      return f.status !== 'uploaded' ? f : null
    },
    60_000,
    `${name} to be validated`,
  )
  assert.equal(file.status, 'error', `${name}: ${JSON.stringify(file)}`)
  await assertNothingLeft(id)
  return file.error as FileError
}

async function assertNothingLeft(fileId?: string) {
  const { storageDir } = env.config
  assert.deepEqual(await readdir(join(storageDir, 'files')), [], 'no stored upload bytes')
  assert.deepEqual(await readdir(join(storageDir, 'tmp')), [], 'no temporary upload bytes')
  if (fileId) {
    const row = await db.file.findUniqueOrThrow({ where: { id: fileId } })
    assert.equal(row.status, 'error')
    assert.equal(row.storagePath, null)
  }
  assert.equal(await db.file.count({ where: { status: { not: 'error' } } }), 0, 'every file row is in error')
  const counts = await worker.deps.queues.files.getJobCounts('waiting', 'delayed', 'active', 'prioritized')
  assert.deepEqual(counts, { waiting: 0, delayed: 0, active: 0, prioritized: 0 }, 'no validation job left')
}

test('zip bomb by compression ratio (20 MiB of zeros in 21 KiB)', async () => {
  const err = await rejected(await FIXTURES['zip-bomb-ratio.zip']!(), 'bomb.zip')
  assert.equal(err.code, 'dataset_too_large')
  assert.match(err.message, /compresses \d+:1, more than the 100:1 allowed/)
  assert.equal(err.details?.[0]?.entry, 'cats/bomb.png')
})

test('zip bomb by declared size (entries claiming 4 GiB each)', async () => {
  const err = await rejected(await FIXTURES['zip-bomb-declared.zip']!(), 'declared.zip')
  assert.equal(err.code, 'dataset_too_large')
  assert.equal(err.message, `The zip uncompresses to more than ${2 * 1024 ** 3} bytes, the limit.`)
  assert.deepEqual(err.details, [{ entry: 'cats/1.png', message: 'uncompressed size limit exceeded here' }])
})

test('too many entries (200,001, zip64)', async () => {
  const err = await rejected(await tooManyEntriesZip(), 'many.zip')
  assert.equal(err.code, 'dataset_too_large')
  assert.equal(err.message, 'The zip holds 200001 entries; the limit is 200000.')
})

test('path traversal entry', async () => {
  const err = await rejected(await FIXTURES['path-traversal.zip']!(), 'traversal.zip')
  assert.equal(err.code, 'invalid_image_zip')
  assert.equal(err.details?.length, 1)
  assert.equal(err.details?.[0]?.entry, 'cats/../../x.pngpp')
  assert.match(err.details?.[0]?.message ?? '', /^unsafe entry name \(invalid relative path/)
})

test('absolute path entry', async () => {
  const err = await rejected(await FIXTURES['absolute-path.zip']!(), 'absolute.zip')
  assert.equal(err.code, 'invalid_image_zip')
  assert.equal(err.details?.[0]?.entry, '/etc/cats/x.pngx')
  assert.match(err.details?.[0]?.message ?? '', /^unsafe entry name \(absolute path/)
})

test('symlink entry', async () => {
  const err = await rejected(await FIXTURES['symlink.zip']!(), 'symlink.zip')
  assert.equal(err.code, 'invalid_image_zip')
  assert.deepEqual(err.details, [
    { entry: 'cats/link.png', message: 'symbolic links are not allowed; store the file itself' },
  ])
})

test('image declaring 100000 x 100000 pixels', async () => {
  const err = await rejected(await FIXTURES['huge-pixels.zip']!(), 'huge.zip')
  assert.equal(err.code, 'invalid_image_zip')
  assert.equal(err.details?.length, 1)
  assert.equal(err.details?.[0]?.entry, 'dogs/huge.png')
  // sharp refuses it from the header (limitInputPixels), before allocating anything
  assert.equal(err.details?.[0]?.message, 'the image could not be decoded (Input image exceeds pixel limit)')
})

test('image one column over MAX_IMAGE_PIXELS (1025 x 1024; the limit is 1024 x 1024)', async () => {
  const err = await rejected(await FIXTURES['over-max-pixels.zip']!(), 'wide.zip')
  assert.equal(err.code, 'invalid_image_zip')
  assert.deepEqual(err.details, [
    { entry: 'dogs/wide.png', message: 'the image is 1025x1024 pixels; the limit is 1048576 pixels' },
  ])
})

test('a non-image file in an image zip', async () => {
  const err = await rejected(await FIXTURES['not-an-image.zip']!(), 'notimage.zip')
  assert.equal(err.code, 'invalid_image_zip')
  assert.equal(err.details?.length, 1)
  assert.equal(err.details?.[0]?.entry, 'dogs/readme.png')
  assert.match(err.details?.[0]?.message ?? '', /not a PNG or JPEG image/)
})

test('CSV with a giant record (2 MiB line)', async () => {
  const err = await rejected(await FIXTURES['giant-record.csv']!(), 'giant.csv')
  assert.equal(err.code, 'invalid_csv')
  assert.deepEqual(err.details, [{ line: 3, message: `the line is longer than ${1024 ** 2} bytes` }])
})

test('CSV with too many columns (10,001 features)', async () => {
  const err = await rejected(await FIXTURES['too-many-columns.csv']!(), 'wide.csv')
  assert.equal(err.code, 'dataset_too_large')
  assert.equal(err.message, 'The CSV file has 10001 feature columns; the limit is 10000.')
})

test('non-UTF-8 text: refused by detection, and line by line when declared as CSV', async () => {
  const content = await FIXTURES['non-utf8.csv']!()
  const detected = await rejected(content, 'latin1.csv')
  assert.equal(detected.code, 'unrecognized_format')
  const declared = await rejected(content, 'latin1.csv', { purpose: 'fine-tune', format: 'csv' })
  assert.equal(declared.code, 'invalid_csv')
  assert.deepEqual(declared.details, [{ line: 3, message: 'the line is not valid UTF-8 text; save the file as UTF-8' }])
})

test('too many multipart parts or files: 400 at once, nothing stored, no row', async () => {
  const before = await db.file.count()
  const fields: Record<string, string> = {}
  for (let i = 0; i < 12; i++) fields[`f${i}`] = 'x'
  const many = multipart(fields, { name: 'd.csv', content: Buffer.from('x,label\n1,a\n2,b\n') })
  const res = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...auth, ...many.headers },
    payload: many.payload,
  })
  assert.equal(res.statusCode, 400, res.body)
  assert.equal(res.json().error.code, 'invalid_request')

  // two file parts
  const boundary = '----refittwofiles'
  const part = (field: string) =>
    `--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\nx,label\n1,a\n2,b\n\r\n`
  const payload = `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n${part('file')}${part('file')}--${boundary}--\r\n`
  const two = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...auth, 'content-type': `multipart/form-data; boundary=${boundary}` },
    payload,
  })
  assert.equal(two.statusCode, 400, two.body)
  assert.equal(two.json().error.code, 'invalid_request')
  assert.equal(await db.file.count(), before)
  await assertNothingLeft()
})

test('after all of that the worker still validates a good file', async () => {
  const res = await upload(Buffer.from('x1,x2,label\n1,2,a\n3,4,b\n5,6,a\n'), 'good.csv')
  assert.equal(res.statusCode, 201)
  const id = res.json().id
  const file = await waitFor(
    async () => {
      const f = (await app.inject({ url: `/v1/files/${id}`, headers: auth })).json()
      return f.status === 'processed' ? f : null
    },
    30_000,
    'the good file',
  )
  assert.equal(file.stats.rows, 3)
  await app.inject({ method: 'DELETE', url: `/v1/files/${id}`, headers: auth })
})
