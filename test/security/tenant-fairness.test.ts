// One tenant cannot hold another's dataset validations or webhook deliveries, and a poison file fails
// cleanly (issue 13, items 2 and 6), on the real service (API + worker processes). The validation slot is
// held from the test through Redis exactly as a long validation would hold it, and the webhook endpoint
// that hangs really hangs (it never answers within the test), so neither check depends on timing.
import assert from 'node:assert/strict'
import { rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Redis } from 'ioredis'
import { createDb, type Db } from '../../src/db/client.js'
import { slotKey, takeSlot } from '../../src/queue/project-slots.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { insertJobRow } from '../helpers/job-rows.js'
import { httpClient, type RunningService, startService } from '../helpers/service.js'

let env: TestEnv
let service: RunningService
let redis: Redis
let db: Db

before(async () => {
  env = await createTestEnv('tenant_fairness', {
    // Receivers listen on 127.0.0.1; a hung delivery would hold its worker slot for the whole test.
    WEBHOOK_ALLOW_PRIVATE: 'true',
    WEBHOOK_TIMEOUT_MS: '300000',
    // The reconcile pass records and enqueues the deliveries of the job rows the test writes.
    RECONCILE_INTERVAL_MS: '300',
  })
  service = await startService(env.env)
  redis = new Redis(env.config.redisUrl)
  db = createDb(env.config.databaseUrl, 2)
})
after(async () => {
  redis?.disconnect()
  await db?.$disconnect()
  await service?.stop()
  await env?.cleanup()
})

async function projectClient(name: string) {
  const admin = httpClient(service.url, ADMIN_TOKEN)
  const project = await admin.post('/v1/admin/projects', { name })
  const key = await admin.post(`/v1/admin/projects/${project.body.id}/api_keys`, { name: 'k' })
  return { projectId: project.body.id as string, api: httpClient(service.url, key.body.key) }
}

const csv = () => {
  let s = 'x,y,label\n'
  for (let i = 0; i < 40; i++) s += `${i},${i % 7},${i % 2 ? 'a' : 'b'}\n`
  return Buffer.from(s)
}

const fileStatus = async (api: ReturnType<typeof httpClient>, id: string) => (await api.get(`/v1/files/${id}`)).body

test("one project's validation in flight does not hold another project's; its own wait their turn", async () => {
  const a = await projectClient('busy')
  const b = await projectClient('other')
  // Project A is "validating a 60,000-entry zip": its slot is taken.
  const held = await takeSlot(redis, slotKey(env.config.queuePrefix, 'files', a.projectId), 'long-validation', 1)
  assert.ok(held)
  try {
    const fa = await a.api.upload('/v1/files', csv(), 'a.csv', { purpose: 'fine-tune' })
    const fb = await b.api.upload('/v1/files', csv(), 'b.csv', { purpose: 'fine-tune' })
    assert.equal(fa.status, 201, JSON.stringify(fa.body))
    await waitFor(async () => (await fileStatus(b.api, fb.body.id)).status === 'processed', 30_000, 'B validated')
    await new Promise((r) => setTimeout(r, 1500))
    assert.equal((await fileStatus(a.api, fa.body.id)).status, 'uploaded', "A's second file waits for A's slot")
    await held.release()
    await waitFor(async () => (await fileStatus(a.api, fa.body.id)).status === 'processed', 30_000, 'A validated')
  } finally {
    await held.release()
  }
})

test('a file whose validation throws on every attempt ends `error` (validation_failed) and its waiting job fails', async () => {
  const a = await projectClient('poison')
  const held = await takeSlot(redis, slotKey(env.config.queuePrefix, 'files', a.projectId), 'hold', 1)
  assert.ok(held)
  const f = await a.api.upload('/v1/files', csv(), 'p.csv', { purpose: 'fine-tune' })
  assert.equal(f.status, 201, JSON.stringify(f.body))
  // The stored bytes vanish: every read the validator tries throws (not a dataset error, so it is retried).
  await rm(join(env.config.storageDir, 'files', f.body.id), { force: true })
  const job = await a.api.post('/v1/fine_tuning/jobs', {
    model: 'mlp-small',
    training_file: f.body.id,
    method: { type: 'supervised' },
  })
  assert.equal(job.status, 200, JSON.stringify(job.body))
  assert.equal(job.body.status, 'validating_files')
  await held.release()
  const file = await waitFor(
    async () => {
      const s = await fileStatus(a.api, f.body.id)
      return s.status === 'error' && s
    },
    30_000,
    'the file to end in error',
  )
  assert.equal(file.error.code, 'validation_failed')
  const failed = await waitFor(
    async () => {
      const j = (await a.api.get(`/v1/fine_tuning/jobs/${job.body.id}`)).body
      return j.status === 'failed' && j
    },
    10_000,
    'the waiting job to fail',
  )
  assert.match(failed.error?.message ?? failed.status_reason ?? '', /failed validation|validation/i)
})

/** A receiver: `hang` accepts and never answers; otherwise it answers 200. Counts requests open at once. */
async function receiver(hang: boolean) {
  let open = 0
  let peak = 0
  let seen = 0
  const server: Server = createServer((req, res) => {
    seen++
    open++
    peak = Math.max(peak, open)
    // The response's close: the request's fires as soon as its body is read.
    res.once('close', () => open--)
    req.resume()
    if (!hang) req.on('end', () => res.end('ok'))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
  return {
    url,
    stats: () => ({ open, peak, seen }),
    close: () => {
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

test("a project whose endpoint hangs holds WEBHOOK_CONCURRENCY_PER_PROJECT deliveries; another project's go out", async () => {
  const a = await projectClient('hangs')
  const b = await projectClient('answers')
  const hung = await receiver(true)
  const ok = await receiver(false)
  try {
    // 10 webhooks x 2 jobs = 20 deliveries to the hanging endpoint: as many as the worker sends at once.
    for (let i = 0; i < 10; i++) {
      const res = await a.api.post('/v1/webhooks', { url: hung.url })
      assert.equal(res.status, 201, JSON.stringify(res.body))
    }
    const hookB = await b.api.post('/v1/webhooks', { url: ok.url })
    assert.equal(hookB.status, 201, JSON.stringify(hookB.body))
    await insertJobRow(db, a.projectId, 'succeeded')
    await insertJobRow(db, a.projectId, 'succeeded')
    await waitFor(async () => hung.stats().open >= 2, 30_000, "A's deliveries to reach the hanging endpoint")
    await insertJobRow(db, b.projectId, 'succeeded')
    await waitFor(async () => ok.stats().seen >= 1, 30_000, "B's delivery while A's hang")
    const deliveries = (await b.api.get(`/v1/webhooks/${hookB.body.id}/deliveries`)).body.data
    await waitFor(
      async () => (await b.api.get(`/v1/webhooks/${hookB.body.id}/deliveries`)).body.data[0]?.status === 'delivered',
      10_000,
      "B's delivery recorded as delivered",
    )
    assert.ok(deliveries.length >= 1)
    // A's endpoint still holds its requests (nothing answered them), and never more than the cap at once.
    assert.ok(hung.stats().open >= 1, 'A is still hanging')
    assert.equal(hung.stats().peak, env.config.webhookConcurrencyPerProject, JSON.stringify(hung.stats()))
    const slots = await redis.zcard(slotKey(env.config.queuePrefix, 'webhooks', a.projectId))
    assert.ok(slots <= env.config.webhookConcurrencyPerProject, `slots held by A: ${slots}`)
  } finally {
    await hung.close()
    await ok.close()
  }
})
