// Webhooks end to end on the real PostgreSQL: routes through app.inject, job rows moved to terminal
// states directly in the database, the dispatcher POSTing to a local receiver that checks signatures.
import assert from 'node:assert/strict'
import { createHmac, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { createDb, type Db } from '../../src/db/client.js'
import type { JobStatus } from '../../src/generated/prisma/client.js'
import { recordJobTerminal } from '../../src/modules/webhooks/webhooks-service.js'
import type { Logger } from '../../workers/deps.js'
import { startWebhookDispatcher, type WebhookDispatcherOptions } from '../../workers/webhook-dispatcher.js'
import { bearer, buildTestApp, createProjectKey, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { insertJobRow } from '../helpers/job-rows.js'

let env: TestEnv
let app: FastifyInstance
let db: Db

before(async () => {
  // Receivers listen on 127.0.0.1: this file tests delivery, test/security/webhook-ssrf.test.ts the address rules.
  env = await createTestEnv('webhooks', { WEBHOOK_ALLOW_PRIVATE: 'true' })
  app = await buildTestApp(env.config)
  db = app.db
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

interface Received {
  at: number
  headers: IncomingHttpHeaders
  body: string
  json: any
  signatureOk: boolean
}

/** A local receiver; `answer(n)` gives the status for the n-th request (0-based). */
async function startReceiver(secret: () => string, answer: (n: number) => number = () => 200, delayMs = 0) {
  const received: Received[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      received.push({
        at: Date.now(),
        headers: req.headers,
        body,
        json: JSON.parse(body),
        signatureOk: verify(secret(), body, req.headers),
      })
      const status = answer(received.length - 1)
      setTimeout(
        () => res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'boom'),
        delayMs,
      )
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/hook`,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

/** The receiver side of the README recipe, written independently of the service's own helper. */
function verify(secret: string, body: string, headers: IncomingHttpHeaders): boolean {
  const header = String(headers['refit-signature'] ?? '')
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header)
  if (!m) return false
  if (Math.abs(Date.now() / 1000 - Number(m[1])) > 300) return false
  const expected = createHmac('sha256', secret).update(`${m[1]}.${body}`).digest()
  return timingSafeEqual(expected, Buffer.from(m[2], 'hex'))
}

function captureLog() {
  const entries: { level: string; msg?: string; [k: string]: unknown }[] = []
  const at = (level: string) => (obj: object, msg?: string) => void entries.push({ level, msg, ...obj })
  const log: Logger = { info: at('info'), warn: at('warn'), error: at('error') }
  return { log, entries }
}

async function project(name: string) {
  const { projectId, key } = await createProjectKey(app, name)
  return { projectId, auth: bearer(key) }
}

async function createHook(auth: { authorization: string }, payload: object) {
  const res = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth, payload })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as { id: string; secret: string; events: string[]; url: string }
}

/** A job row already ended `status`, as a worker would leave it (the reason names the test). */
const finishedJob = (projectId: string, status: JobStatus, finishedAt = new Date()) =>
  insertJobRow(db, projectId, status, { finishedAt, statusReason: `test ${status}` })

async function deliveries(auth: { authorization: string }, webhookId: string) {
  const res = await app.inject({ method: 'GET', url: `/v1/webhooks/${webhookId}/deliveries?limit=100`, headers: auth })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().data as any[]
}

async function withDispatcher<T>(fn: () => Promise<T>, opts: WebhookDispatcherOptions = {}, log = captureLog().log) {
  const d = startWebhookDispatcher(
    { db, log, config: env.config },
    { intervalMs: 100, policy: { allowPrivate: true }, ...opts },
  )
  try {
    return await fn()
  } finally {
    await d.close()
  }
}

test('the url must be http(s) without credentials; events must be terminal statuses', async () => {
  const { auth } = await project('urls')
  for (const url of [
    'ftp://example.com/hook',
    'not a url',
    'https://user:pw@example.com/hook',
    'javascript:alert(1)',
  ]) {
    const res = await app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth, payload: { url } })
    assert.equal(res.statusCode, 400, url)
    assert.equal(res.json().error.code, 'invalid_webhook_url', url)
    assert.equal(res.json().error.param, 'url')
  }
  for (const events of [['running'], [], ['failed', 'failed']]) {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/webhooks',
      headers: auth,
      payload: { url: 'https://example.com/hook', events },
    })
    assert.equal(res.statusCode, 400, JSON.stringify(events))
    assert.equal(res.json().error.code, 'invalid_request')
  }
})

test('the secret is shown at creation only; lists and deletes; another project gets 404 like a missing id', async () => {
  const a = await project('owner')
  const b = await project('other')
  const hook = await createHook(a.auth, { url: 'https://example.com/hook' })
  assert.match(hook.id, /^wh-[a-z0-9]{24}$/)
  assert.deepEqual(hook.events, ['succeeded', 'failed', 'cancelled'])
  assert.match(hook.secret, /^whsec_/)

  const list = await app.inject({ method: 'GET', url: '/v1/webhooks', headers: a.auth })
  assert.equal(list.statusCode, 200)
  assert.deepEqual(
    list.json().data.map((w: any) => w.id),
    [hook.id],
  )
  assert.ok(!list.body.includes(hook.secret), 'GET never returns the secret')
  assert.equal(list.json().data[0].secret, undefined)
  const other = await app.inject({ method: 'GET', url: '/v1/webhooks', headers: b.auth })
  assert.deepEqual(other.json().data, [])

  const missing = 'wh-000000000000000000000000'
  for (const [method, path] of [
    ['GET', (id: string) => `/v1/webhooks/${id}/deliveries`],
    ['DELETE', (id: string) => `/v1/webhooks/${id}`],
  ] as const) {
    const foreign = await app.inject({ method, url: path(hook.id), headers: b.auth })
    const absent = await app.inject({ method, url: path(missing), headers: b.auth })
    assert.equal(foreign.statusCode, 404)
    assert.equal(foreign.json().error.code, 'not_found')
    assert.equal(
      foreign.json().error.message.replace(hook.id, '<id>'),
      absent.json().error.message.replace(missing, '<id>'),
    )
  }

  const del = await app.inject({ method: 'DELETE', url: `/v1/webhooks/${hook.id}`, headers: a.auth })
  assert.equal(del.statusCode, 200)
  assert.deepEqual(del.json(), { id: hook.id, object: 'webhook', deleted: true })
  const again = await app.inject({ method: 'DELETE', url: `/v1/webhooks/${hook.id}`, headers: a.auth })
  assert.equal(again.statusCode, 404)
  const after = await app.inject({ method: 'GET', url: '/v1/webhooks', headers: a.auth })
  assert.deepEqual(after.json().data, [])
})

test('signed deliveries arrive exactly once with two dispatchers racing (explicit record and sweep)', async () => {
  const { projectId, auth } = await project('race')
  let secret = ''
  const rx = await startReceiver(
    () => secret,
    () => 200,
    30,
  )
  const second = createDb(env.config.databaseUrl, 5)
  try {
    const hook = await createHook(auth, { url: rx.url })
    secret = hook.secret
    const statuses: JobStatus[] = ['succeeded', 'failed', 'cancelled', 'succeeded', 'failed', 'cancelled', 'succeeded']
    const jobs = new Map<string, JobStatus>()
    for (const [i, s] of statuses.entries()) {
      const id = await finishedJob(projectId, s)
      jobs.set(id, s)
      // Half are recorded explicitly (twice: idempotent); the rest are left to the dispatchers' sweep.
      if (i % 2 === 0) {
        assert.equal(await recordJobTerminal(db, id), 1)
        assert.equal(await recordJobTerminal(db, id), 0)
      }
    }
    const logs = [captureLog(), captureLog()]
    const d1 = startWebhookDispatcher(
      { db, log: logs[0].log, config: env.config },
      { intervalMs: 50, batchSize: 2, policy: { allowPrivate: true } },
    )
    const d2 = startWebhookDispatcher(
      { db: second, log: logs[1].log, config: env.config },
      { intervalMs: 50, batchSize: 2, policy: { allowPrivate: true } },
    )
    try {
      await waitFor(
        async () => (await deliveries(auth, hook.id)).filter((d) => d.status === 'delivered').length === jobs.size,
        15_000,
        'all deliveries delivered',
      )
      await new Promise((r) => setTimeout(r, 400)) // a few more ticks of both: nothing is sent again
    } finally {
      await Promise.all([d1.close(), d2.close()])
    }

    assert.equal(rx.received.length, jobs.size, 'one request per delivery')
    const ids = rx.received.map((r) => r.headers['refit-webhook-id'])
    assert.equal(new Set(ids).size, jobs.size, 'no delivery sent twice')
    const senders = logs.map((l) => l.entries.filter((e) => e.msg === 'webhook delivered').length)
    assert.equal(senders[0] + senders[1], jobs.size)
    for (const r of rx.received) {
      assert.ok(r.signatureOk, 'signature verifies with the secret from creation')
      assert.equal(r.headers['content-type'], 'application/json')
      assert.equal(r.json.id, r.headers['refit-webhook-id'])
      assert.equal(r.json.object, 'event')
      const status = jobs.get(r.json.data.id)
      assert.ok(status, 'data.id is one of the jobs')
      assert.equal(r.json.type, `fine_tuning.job.${status}`)
      assert.equal(r.json.data.status, status)
      assert.equal(r.json.data.object, 'fine_tuning.job')
      assert.equal(r.json.data.organization_id, projectId)
    }
    const log = await deliveries(auth, hook.id)
    assert.equal(log.length, jobs.size)
    for (const d of log) {
      assert.equal(d.attempts, 1)
      assert.equal(d.response_status, 200)
      assert.equal(d.webhook_id, hook.id)
      assert.equal(d.event, jobs.get(d.job_id))
      assert.ok(d.delivered_at >= d.created_at)
    }
    const created = log.map((d) => d.created_at)
    assert.deepEqual(
      created,
      [...created].sort((x, y) => y - x),
      'newest first',
    )
  } finally {
    await second.$disconnect()
    await rx.close()
  }
})

test('a receiver answering 500 twice then 200 gets it on attempt 3, after 1 s and 2 s backoff', async () => {
  const { projectId, auth } = await project('retry')
  let secret = ''
  const rx = await startReceiver(
    () => secret,
    (n) => (n < 2 ? 500 : 200),
  )
  try {
    const hook = await createHook(auth, { url: rx.url, events: ['succeeded'] })
    secret = hook.secret
    const jobId = await finishedJob(projectId, 'succeeded')
    assert.equal(await recordJobTerminal(db, jobId), 1)
    const { log, entries } = captureLog()
    const d = await withDispatcher(
      () =>
        waitFor(async () => (await deliveries(auth, hook.id)).find((x) => x.status !== 'pending'), 15_000, 'delivery'),
      {},
      log,
    )
    assert.equal(d.status, 'delivered')
    assert.equal(d.attempts, 3)
    assert.equal(d.response_status, 200)
    assert.equal(d.last_error, 'HTTP 500', 'the status only: the body is never kept')
    assert.equal(d.error_class, 'http_status')
    assert.equal(typeof d.duration_ms, 'number')

    assert.equal(rx.received.length, 3)
    assert.ok(rx.received.every((r) => r.signatureOk && r.json.data.id === jobId))
    assert.equal(new Set(rx.received.map((r) => r.json.id)).size, 1, 'retries resend the same event')
    const gaps = [rx.received[1].at - rx.received[0].at, rx.received[2].at - rx.received[1].at]
    assert.ok(gaps[0] >= 950 && gaps[0] < 2_000, `first retry after ~1 s (${gaps[0]} ms)`)
    assert.ok(gaps[1] >= 1_950 && gaps[1] < 3_000, `second retry after ~2 s (${gaps[1]} ms)`)

    const failures = entries.filter((e) => e.deliveryId === d.id && e.level === 'warn')
    assert.deepEqual(
      failures.map((e) => [e.attempt, e.status, e.retryInMs]),
      [
        [1, 500, 1000],
        [2, 500, 2000],
      ],
    )
    assert.match(failures[0].msg!, /retrying in 1000 ms/)
    const ok = entries.find((e) => e.deliveryId === d.id && e.msg === 'webhook delivered')
    assert.equal(ok?.attempt, 3)
  } finally {
    await rx.close()
  }
})

test('after the last attempt a delivery is failed, with the error kept', async () => {
  const { projectId, auth } = await project('give-up')
  const rx = await startReceiver(
    () => '',
    () => 503,
  )
  try {
    const hook = await createHook(auth, { url: rx.url })
    await recordJobTerminal(db, await finishedJob(projectId, 'failed'))
    const d = await withDispatcher(
      () => waitFor(async () => (await deliveries(auth, hook.id)).find((x) => x.status === 'failed'), 10_000, 'failed'),
      { backoffMs: [50, 50, 50], maxAttempts: 3 },
    )
    assert.equal(d.attempts, 3)
    assert.equal(d.response_status, 503)
    assert.match(d.last_error, /^HTTP 503/)
    assert.equal(d.next_attempt_at, null)
    assert.equal(rx.received.length, 3)
  } finally {
    await rx.close()
  }
})

test('unsubscribed events, deleted webhooks and jobs that finished before the webhook existed are not sent', async () => {
  const { projectId, auth } = await project('quiet')
  const rx = await startReceiver(() => '')
  try {
    const earlier = await finishedJob(projectId, 'failed', new Date(Date.now() - 60_000))
    const onlyFailed = await createHook(auth, { url: rx.url, events: ['failed'] })
    const deleted = await createHook(auth, { url: rx.url })
    const succeeded = await finishedJob(projectId, 'succeeded')
    const cancelled = await finishedJob(projectId, 'cancelled')
    assert.equal(await recordJobTerminal(db, succeeded), 2 - 1, 'only the all-events webhook records it')
    const del = await app.inject({ method: 'DELETE', url: `/v1/webhooks/${deleted.id}`, headers: auth })
    assert.equal(del.statusCode, 200)
    const row = await db.webhookDelivery.findFirstOrThrow({ where: { webhookId: deleted.id } })
    assert.equal(row.status, 'failed')
    assert.equal(row.lastError, 'webhook deleted')

    await withDispatcher(() => new Promise((r) => setTimeout(r, 600)))
    assert.equal(rx.received.length, 0)
    assert.deepEqual(await deliveries(auth, onlyFailed.id), [])
    assert.equal(await recordJobTerminal(db, cancelled), 0)
    assert.equal(await recordJobTerminal(db, earlier), 0)
    assert.equal(await db.webhookDelivery.count({ where: { webhookId: deleted.id } }), 1)
  } finally {
    await rx.close()
  }
})
