// Quotas are exact (issue 13, item 5), on a listening API through real sockets: concurrent uploads never
// store more than the storage quota, a Content-Length that cannot fit is refused before the body is sent,
// a chunked body is cut where the quota ends, model uploads count, and simultaneous job creates respect
// max_concurrent_jobs exactly.
import assert from 'node:assert/strict'
import { readdir, stat } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { StorageReservation } from '../../src/modules/limits/storage-reservation.js'
import {
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
} from '../helpers/env.js'
import { convModel, modelZip } from '../helpers/memory-fixtures.js'

let env: TestEnv
let app: FastifyInstance
let base: string

before(async () => {
  env = await createTestEnv('exact_quotas')
  app = await buildTestApp(env.config)
  await app.listen({ port: 0, host: '127.0.0.1' })
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

async function project(name: string, limits: { storage_quota_bytes?: number; max_concurrent_jobs?: number }) {
  const { projectId, key } = await createProjectKey(app, name)
  const res = await app.inject({
    method: 'PATCH',
    url: `/v1/admin/projects/${projectId}/limits`,
    headers: adminAuth,
    payload: limits,
  })
  assert.equal(res.statusCode, 200, res.body)
  return { projectId, key }
}

const csv = (rows: number) => {
  let s = 'x,y,label\n'
  for (let i = 0; i < rows; i++) s += `${i},${i % 7},${i % 2 ? 'a' : 'b'}\n`
  return Buffer.from(s)
}

/** Bytes the project's files hold in storage (what was really written, whatever the rows say). */
async function storedFileBytes(projectId: string) {
  const rows = await app.db.file.findMany({ where: { projectId, storagePath: { not: null } } })
  let n = 0
  for (const r of rows) n += (await stat(join(env.config.storageDir, r.storagePath!)).catch(() => ({ size: 0 }))).size
  return n
}

const upload = (key: string, content: Buffer, name = 'd.csv') => {
  const body = multipart({ purpose: 'fine-tune' }, { name, content })
  return fetch(`${base}/v1/files`, { method: 'POST', headers: { ...bearer(key), ...body.headers }, body: body.payload })
}

test('30 concurrent uploads store no more than the quota', async () => {
  const data = csv(2000) // ~20 KB
  const quota = 5 * data.length + 1000
  const p = await project('uploads', { storage_quota_bytes: quota })
  const results = await Promise.all(Array.from({ length: 30 }, () => upload(p.key, data)))
  const statuses = results.map((r) => r.status)
  const ok = statuses.filter((s) => s === 201).length
  assert.ok(ok >= 1, `statuses: ${statuses}`)
  assert.ok(
    statuses.every((s) => s === 201 || s === 403),
    `statuses: ${statuses}`,
  )
  const refused = results.find((r) => r.status === 403)
  assert.equal((await refused!.json()).error.code, 'storage_quota_exceeded')
  const stored = await storedFileBytes(p.projectId)
  assert.ok(stored <= quota, `stored ${stored} > quota ${quota}`)
  assert.equal(stored, ok * data.length)
  const usage = await app.inject({ url: `/v1/admin/projects/${p.projectId}/usage`, headers: adminAuth })
  assert.ok(usage.json().storage_used_bytes <= quota)
})

test('a Content-Length past the remaining quota is refused before the body is sent', async () => {
  const p = await project('upfront', { storage_quota_bytes: 50_000 })
  const socket = connect(Number(new URL(base).port), '127.0.0.1')
  let got = ''
  socket.on('data', (d) => (got += d))
  socket.on('error', () => {})
  const closed = new Promise((r) => socket.once('close', r))
  socket.write(
    `POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${p.key}\r\n` +
      'Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n',
  )
  await closed
  assert.match(got, /^HTTP\/1\.1 403/)
  assert.match(got, /storage_quota_exceeded/)
})

test('a chunked upload is cut where the quota ends; nothing past it is stored', async () => {
  const quota = 200_000
  const p = await project('chunked', { storage_quota_bytes: quota })
  const data = csv(40_000) // ~500 KB, sent without Content-Length
  const body = multipart({ purpose: 'fine-tune' }, { name: 'big.csv', content: data })
  let offset = 0
  const stream = new ReadableStream({
    pull(ctl) {
      if (offset >= body.payload.length) return ctl.close()
      ctl.enqueue(body.payload.subarray(offset, offset + 16_384))
      offset += 16_384
    },
  })
  const status = await fetch(`${base}/v1/files`, {
    method: 'POST',
    headers: { ...bearer(p.key), ...body.headers },
    body: stream,
    duplex: 'half',
  } as RequestInit).then(
    (r) => r.status,
    () => 'connection closed',
  )
  assert.ok(status === 403 || status === 'connection closed', String(status))
  assert.equal(await storedFileBytes(p.projectId), 0)
  // and nothing was left in temporary space either
  const tmp = await readdir(join(env.config.storageDir, 'tmp')).catch(() => [])
  let tmpBytes = 0
  for (const f of tmp) tmpBytes += (await stat(join(env.config.storageDir, 'tmp', f)).catch(() => ({ size: 0 }))).size
  assert.equal(tmpBytes, 0)
  // a small file still fits
  assert.equal((await upload(p.key, csv(100))).status, 201)
})

test('uploaded models count toward the quota', async () => {
  const p = await project('models', { storage_quota_bytes: 10_000_000 })
  const zip = await modelZip(convModel(16))
  const body = multipart({ input_shape: '[16,16,3]', classes: '["a","b"]' }, { name: 'm.zip', content: zip })
  const res = await fetch(`${base}/v1/models`, {
    method: 'POST',
    headers: { ...bearer(p.key), ...body.headers },
    body: body.payload,
  })
  const created = await res.text()
  assert.equal(res.status, 201, created)
  const usage = (await app.inject({ url: `/v1/admin/projects/${p.projectId}/usage`, headers: adminAuth })).json()
  const artifact = await app.db.artifact.findFirstOrThrow({ where: { projectId: p.projectId } })
  assert.ok(Number(artifact.bytes) > 0)
  assert.equal(usage.storage_used_bytes, Number(artifact.bytes))
  // a quota below what the model holds refuses the next upload of it
  await app.inject({
    method: 'PATCH',
    url: `/v1/admin/projects/${p.projectId}/limits`,
    headers: adminAuth,
    payload: { storage_quota_bytes: Number(artifact.bytes) + 100 },
  })
  const again = await fetch(`${base}/v1/models`, {
    method: 'POST',
    headers: { ...bearer(p.key), ...body.headers },
    body: body.payload,
  })
  assert.equal(again.status, 403)
  assert.equal((await again.json()).error.code, 'storage_quota_exceeded')
  // deleting the model gives its bytes back: the same upload fits again
  const modelId = JSON.parse(created).id
  const del = await fetch(`${base}/v1/models/${encodeURIComponent(modelId)}`, {
    method: 'DELETE',
    headers: bearer(p.key),
  })
  assert.equal(del.status, 200)
  const after = (await app.inject({ url: `/v1/admin/projects/${p.projectId}/usage`, headers: adminAuth })).json()
  assert.equal(after.storage_used_bytes, 0)
  const third = await fetch(`${base}/v1/models`, {
    method: 'POST',
    headers: { ...bearer(p.key), ...body.headers },
    body: body.payload,
  })
  assert.equal(third.status, 201, await third.text())
})

test('20 simultaneous creates with max_concurrent_jobs 1 make exactly one job', async () => {
  const p = await project('jobs', { max_concurrent_jobs: 1 })
  const file = await upload(p.key, csv(100))
  assert.equal(file.status, 201)
  const fileId = (await file.json()).id
  const results = await Promise.all(
    Array.from({ length: 20 }, () =>
      fetch(`${base}/v1/fine_tuning/jobs`, {
        method: 'POST',
        headers: { ...bearer(p.key), 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'mlp-small', training_file: fileId, method: { type: 'supervised' } }),
      }),
    ),
  )
  const statuses = results.map((r) => r.status)
  assert.equal(statuses.filter((s) => s === 200).length, 1, `statuses: ${statuses}`)
  assert.equal(statuses.filter((s) => s === 429).length, 19, `statuses: ${statuses}`)
  assert.equal(await app.db.fineTuningJob.count({ where: { projectId: p.projectId } }), 1)
})

test('a reservation gets through while other writers release all the time (retried, not refused)', async () => {
  const { projectId } = await project('contention', { storage_quota_bytes: 1_000_000 })
  // every release bumps the project's generation; a reservation whose figure predates it is tried again
  const hammer = new Redis(env.config.redisUrl)
  const generation = `${env.config.queuePrefix}:quota:${projectId}:generation`
  let releasing = true
  const releases = (async () => {
    while (releasing) await hammer.incr(generation)
  })()
  const quiet = setTimeout(() => {
    releasing = false
  }, 1500)
  const r = new StorageReservation(app, projectId)
  try {
    await r.reserve(1000, 'This write')
    assert.equal(r.reserved, 1000)
    assert.ok(Number(await app.redis.get(generation)) > 100, 'the generation moved all along')
  } finally {
    clearTimeout(quiet)
    releasing = false
    await releases
    hammer.disconnect()
    await r.release()
  }
})
