// Resource limits (OWASP API4, unrestricted resource consumption): per-project storage quota and
// concurrent jobs, a Redis-backed rate limit per key, handler timeouts, security headers, a strict CORS
// policy and load shedding. Small limits come from config overrides.
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import type { Config } from '../../src/config.js'
import { createDb, type Db } from '../../src/db/client.js'
import {
  ADMIN_TOKEN,
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
let db: Db
const extraApps: FastifyInstance[] = []

before(async () => {
  env = await createTestEnv('sec_limits', { STORAGE_QUOTA_BYTES: '100', MAX_CONCURRENT_JOBS: '2' })
  app = await buildTestApp(env.config)
  db = createDb(env.config.databaseUrl, 2)
})
after(async () => {
  for (const a of extraApps) await a.close().catch(() => {})
  await app?.close()
  await db?.$disconnect()
  await env?.cleanup()
})

async function appWith(overrides: Partial<Config>, setup?: (a: FastifyInstance) => void) {
  const a = await buildApp({ config: { ...env.config, ...overrides }, adminToken: ADMIN_TOKEN, logger: false })
  setup?.(a)
  await a.ready()
  extraApps.push(a)
  return a
}

const csv = (bytes: number) => {
  const head = 'x,label\n'
  const row = '1,a\n2,b\n'
  let s = head
  while (s.length + row.length <= bytes) s += row
  return Buffer.from(s.padEnd(bytes, '\n'))
}

async function upload(a: FastifyInstance, key: string, content: Buffer) {
  const body = multipart({ purpose: 'fine-tune' }, { name: 'd.csv', content })
  return a.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
}

test('storage quota: an upload past it is 403 storage_quota_exceeded and leaves nothing stored', async () => {
  const { key, projectId } = await createProjectKey(app, 'quota')
  const first = await upload(app, key, csv(60))
  assert.equal(first.statusCode, 201, first.body)
  const before = await readdir(join(env.config.storageDir, 'files'))
  const second = await upload(app, key, csv(60))
  assert.equal(second.statusCode, 403, second.body)
  const error = second.json().error
  assert.equal(error.code, 'storage_quota_exceeded')
  assert.equal(error.type, 'permission_error')
  assert.equal(error.param, 'file')
  assert.deepEqual(error.details, [
    { field: 'storage_used_bytes', message: '60' },
    { field: 'storage_quota_bytes', message: '100' },
  ])
  assert.deepEqual(await readdir(join(env.config.storageDir, 'files')), before, 'the refused bytes were removed')
  assert.deepEqual(await readdir(join(env.config.storageDir, 'tmp')), [])
  assert.equal(await db.file.count({ where: { projectId } }), 1)

  const usage = await app.inject({ url: `/v1/admin/projects/${projectId}/usage`, headers: adminAuth })
  assert.deepEqual(usage.json(), {
    id: projectId,
    object: 'project.usage',
    storage_quota_bytes: 100,
    storage_used_bytes: 60,
    max_concurrent_jobs: 2,
    unfinished_jobs: 0,
  })

  // the project's own quota overrides the server default; null goes back to it
  const raised = await app.inject({
    method: 'PATCH',
    url: `/v1/admin/projects/${projectId}/limits`,
    headers: adminAuth,
    payload: { storage_quota_bytes: 1000 },
  })
  assert.equal(raised.statusCode, 200, raised.body)
  assert.equal(raised.json().storage_quota_bytes, 1000)
  assert.equal((await upload(app, key, csv(60))).statusCode, 201)
  await app.inject({
    method: 'PATCH',
    url: `/v1/admin/projects/${projectId}/limits`,
    headers: adminAuth,
    payload: { storage_quota_bytes: null },
  })
  assert.equal((await upload(app, key, csv(10))).statusCode, 403)

  // deleting a file gives its bytes back
  const files = (await app.inject({ url: '/v1/files', headers: bearer(key) })).json().data
  for (const f of files) await app.inject({ method: 'DELETE', url: `/v1/files/${f.id}`, headers: bearer(key) })
  assert.equal((await upload(app, key, csv(60))).statusCode, 201)
  // other projects have their own quota
  const other = await createProjectKey(app, 'quota-other')
  assert.equal((await upload(app, other.key, csv(60))).statusCode, 201)
})

test('concurrent jobs: past MAX_CONCURRENT_JOBS a new job is 429 too_many_jobs with Retry-After', async () => {
  const { key, projectId } = await createProjectKey(app, 'jobs')
  const file = (await upload(app, key, csv(40))).json().id
  const create = () =>
    app.inject({
      method: 'POST',
      url: '/v1/fine_tuning/jobs',
      headers: bearer(key),
      payload: { model: 'mnist-cnn', training_file: file },
    })
  const a = await create()
  const b = await create()
  assert.equal(a.statusCode, 200, a.body)
  assert.equal(b.statusCode, 200, b.body)
  const c = await create()
  assert.equal(c.statusCode, 429, c.body)
  assert.equal(c.json().error.code, 'too_many_jobs')
  assert.equal(c.json().error.type, 'rate_limit_error')
  assert.equal(c.headers['retry-after'], '30')
  assert.equal(await db.fineTuningJob.count({ where: { projectId } }), 2)

  // a finished (cancelled) job frees its slot
  await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${a.json().id}/cancel`, headers: bearer(key) })
  assert.equal((await create()).statusCode, 200)
  assert.equal((await create()).statusCode, 429)
  // the project override
  await app.inject({
    method: 'PATCH',
    url: `/v1/admin/projects/${projectId}/limits`,
    headers: adminAuth,
    payload: { max_concurrent_jobs: 3 },
  })
  assert.equal((await create()).statusCode, 200)
  assert.equal((await create()).statusCode, 429)
  const bad = await app.inject({
    method: 'PATCH',
    url: `/v1/admin/projects/${projectId}/limits`,
    headers: adminAuth,
    payload: { max_concurrent_jobs: 0 },
  })
  assert.equal(bad.statusCode, 400)
})

test('rate limit: per key, counted in Redis across API processes, 429 rate_limited with Retry-After', async () => {
  const prefix = `${env.config.queuePrefix}-rl`
  const a1 = await appWith({ rateLimitPerMinute: 5, queuePrefix: prefix })
  const a2 = await appWith({ rateLimitPerMinute: 5, queuePrefix: prefix })
  const { key, projectId } = await createProjectKey(app, 'rate')
  const second = (
    await app.inject({
      method: 'POST',
      url: `/v1/admin/projects/${projectId}/api_keys`,
      headers: adminAuth,
      payload: {},
    })
  ).json().key as string
  const get = (a: FastifyInstance, k: string) => a.inject({ url: '/v1/files', headers: bearer(k) })

  for (let i = 0; i < 3; i++) assert.equal((await get(a1, key)).statusCode, 200)
  const fourth = await get(a2, key) // the other process sees the same count
  assert.equal(fourth.statusCode, 200)
  assert.equal(fourth.headers['x-ratelimit-limit'], '5')
  assert.equal(fourth.headers['x-ratelimit-remaining'], '1')
  assert.equal((await get(a2, key)).statusCode, 200)
  const limited = await get(a1, key)
  assert.equal(limited.statusCode, 429, limited.body)
  const error = limited.json().error
  assert.equal(error.code, 'rate_limited')
  assert.equal(error.type, 'rate_limit_error')
  assert.equal(error.request_id, limited.headers['x-request-id'])
  const retry = Number(limited.headers['retry-after'])
  assert.ok(retry >= 1 && retry <= 60, `retry-after ${limited.headers['retry-after']}`)

  // another key of the same project has its own budget; probes are never limited
  assert.equal((await get(a1, second)).statusCode, 200)
  for (let i = 0; i < 8; i++) assert.equal((await a1.inject('/healthz')).statusCode, 200)

  // requests with a bad key count against the address, so key guessing is throttled too
  const garbage = `rk-abcdefghijkl.${'Q'.repeat(43)}`
  const codes: number[] = []
  for (let i = 0; i < 7; i++) codes.push((await get(a1, garbage)).statusCode)
  assert.deepEqual(codes, [401, 401, 401, 401, 401, 429, 429])
})

test('handler timeout: a slow JSON route answers 503 request_timeout; streaming routes are exempt', async () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
  const a = await appWith({ requestTimeoutMs: 200 }, (inst) => {
    inst.get('/v1/test-slow', { config: { auth: 'public' } }, async () => {
      await sleep(600)
      return { ok: true }
    })
    inst.post(
      '/v1/test-slow-upload',
      {
        config: { auth: 'public' },
        schema: { consumes: ['multipart/form-data'] },
        validatorCompiler: () => () => true,
      },
      async () => {
        await sleep(400)
        return { ok: true }
      },
    )
  })
  const slow = await a.inject('/v1/test-slow')
  assert.equal(slow.statusCode, 503)
  assert.equal(slow.json().error.code, 'request_timeout')
  assert.equal(slow.headers['retry-after'], '5')
  const body = multipart({ purpose: 'x' })
  const up = await a.inject({ method: 'POST', url: '/v1/test-slow-upload', ...body })
  assert.equal(up.statusCode, 200, up.body)
  // ordinary routes still answer
  assert.equal((await a.inject('/healthz')).statusCode, 200)
})

test('security headers on every answer, errors included', async () => {
  for (const url of ['/healthz', '/v1/files', '/v1/nope']) {
    const res = await app.inject(url)
    assert.equal(res.headers['x-content-type-options'], 'nosniff', url)
    assert.match(String(res.headers['content-security-policy']), /frame-ancestors 'none'/, url)
    assert.equal(res.headers['cross-origin-resource-policy'], 'same-origin', url)
    assert.match(String(res.headers['strict-transport-security']), /max-age=/, url)
    assert.equal(res.headers['x-powered-by'], undefined)
  }
})

test('CORS: no cross-origin access by default; CORS_ORIGINS opts named origins in', async () => {
  const evil = { origin: 'https://evil.example' }
  const res = await app.inject({ url: '/healthz', headers: evil })
  assert.equal(res.headers['access-control-allow-origin'], undefined)
  const preflight = await app.inject({
    method: 'OPTIONS',
    url: '/v1/files',
    headers: { ...evil, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
  })
  assert.equal(preflight.headers['access-control-allow-origin'], undefined)
  assert.equal(preflight.statusCode, 404)

  const withCors = await appWith({ corsOrigins: ['https://dash.example'] })
  const allowed = await withCors.inject({
    method: 'OPTIONS',
    url: '/v1/files',
    headers: {
      origin: 'https://dash.example',
      'access-control-request-method': 'GET',
      'access-control-request-headers': 'authorization',
    },
  })
  assert.equal(allowed.statusCode, 204, allowed.body)
  assert.equal(allowed.headers['access-control-allow-origin'], 'https://dash.example')
  assert.match(String(allowed.headers['access-control-allow-headers']), /authorization/)
  const refused = await withCors.inject({
    method: 'OPTIONS',
    url: '/v1/files',
    headers: { ...evil, 'access-control-request-method': 'GET' },
  })
  assert.equal(refused.headers['access-control-allow-origin'], undefined)
  const get = await withCors.inject({ url: '/healthz', headers: { origin: 'https://dash.example' } })
  assert.equal(get.headers['access-control-allow-origin'], 'https://dash.example')
})

test('load shedding: under sustained pressure requests get 503 overloaded with Retry-After; the probes still answer', async () => {
  const a = await appWith({ maxHeapUsedBytes: 1, maxEventLoopDelayMs: 0 })
  await new Promise((r) => setTimeout(r, 1200)) // a few samples, all over the (absurd) heap limit
  const res = await a.inject({ url: '/v1/files', headers: adminAuth })
  assert.equal(res.statusCode, 503, res.body)
  assert.equal(res.json().error.code, 'overloaded')
  assert.equal(res.json().error.type, 'server_error')
  assert.equal(res.headers['retry-after'], '5')
  for (const probe of ['/healthz', '/readyz']) assert.equal((await a.inject(probe)).statusCode, 200, probe)
  // the ordinary app (no pressure) is unaffected
  assert.equal((await app.inject('/readyz')).statusCode, 200)
})
