// Redis down when a job is created, and Redis restarted during a job, on a private redis-server with an
// append-only file: no lost job, no 500, the job completes. With Redis down the storage quota is reserved
// through PostgreSQL: uploads stay exact, a running job's checkpoints are recorded (not lost, not stalled).
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { storageUsed } from '../../src/modules/limits/limits-service.js'
import {
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
  waitFor,
} from '../helpers/env.js'
import { createTransferJob, uploadDigits, waitForTerminal } from '../helpers/jobs.js'
import { type PrivateRedis, startPrivateRedis } from '../helpers/private-services.js'
import { startWorkerProcess, type WorkerProcess } from '../helpers/worker-process.js'

let redis: PrivateRedis
let env: TestEnv
let app: FastifyInstance
let worker: WorkerProcess
let key: string
let fileId: string
let work: string

before(async () => {
  redis = await startPrivateRedis()
  env = await createTestEnv('redis_restart', { REDIS_URL: redis.url, RECONCILE_INTERVAL_MS: '500' })
  app = await buildTestApp(env.config)
  ;({ key } = await createProjectKey(app))
  worker = await startWorkerProcess(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-redis-'))
  fileId = await uploadDigits(app, key, work, 1500)
})

after(async () => {
  await worker?.kill('SIGKILL')
  await app?.close()
  await env?.cleanup().catch(() => {})
  await redis?.destroy()
  if (work) await rm(work, { recursive: true, force: true })
})

test('a job created while Redis is down is stored (no 500) and runs once Redis is back', async () => {
  await redis.stop()
  let job: { id: string; status: string }
  try {
    const ready = await app.inject('/readyz')
    assert.equal(ready.statusCode, 503)
    assert.equal(ready.json().checks.redis.status, 'down')
    job = await createTransferJob(app, key, fileId, { n_epochs: 2, batch_size: 32 })
    assert.equal(job.status, 'queued')
    const read = await app.inject({ method: 'GET', url: `/v1/fine_tuning/jobs/${job.id}`, headers: bearer(key) })
    assert.equal(read.statusCode, 200, 'reads do not need Redis')
  } finally {
    // back up whatever happened, so the next test and the clean-up do not wait on a dead Redis
    await redis.start()
  }
  const done = await waitForTerminal(app, job.id)
  assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  assert.equal(done.attempt, 1)
})

test('Redis restarted during a job: the job completes with one metric row per epoch', async () => {
  const job = await createTransferJob(app, key, fileId, { n_epochs: 6, batch_size: 16 })
  await waitFor(async () => (await app.db.checkpoint.count({ where: { jobId: job.id } })) >= 1, 120_000, 'a checkpoint')
  await redis.stop()
  await new Promise((r) => setTimeout(r, 2000))
  await redis.start()
  const done = await waitForTerminal(app, job.id)
  assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  for (const name of ['loss', 'val_accuracy'])
    assert.equal(await app.db.metric.count({ where: { jobId: job.id, name } }), 6)
})

test('Redis down: uploads reserve through PostgreSQL and stay exact (8 at once, room for 3)', async () => {
  const { projectId, key: k } = await createProjectKey(app, 'fallback')
  let csv = 'x,y,label\n'
  for (let i = 0; csv.length < 20_000; i++) csv += `${i},${i % 7},${i % 2 ? 'a' : 'b'}\n`
  const body = multipart({ purpose: 'fine-tune' }, { name: 'd.csv', content: Buffer.from(csv) })
  const quota = Math.floor(3.5 * csv.length)
  const limits = await app.inject({
    method: 'PATCH',
    url: `/v1/admin/projects/${projectId}/limits`,
    headers: adminAuth,
    payload: { storage_quota_bytes: quota },
  })
  assert.equal(limits.statusCode, 200, limits.body)
  await redis.stop()
  try {
    const res = await Promise.all(
      Array.from({ length: 8 }, () =>
        app.inject({
          method: 'POST',
          url: '/v1/files',
          headers: { ...bearer(k), ...body.headers },
          payload: body.payload,
        }),
      ),
    )
    const codes = res.map((r) => (r.statusCode === 201 ? 201 : `${r.statusCode} ${r.json().error?.code}`))
    assert.equal(codes.filter((c) => c === 201).length, 3, codes.join(', '))
    assert.deepEqual(new Set(codes.filter((c) => c !== 201)), new Set(['403 storage_quota_exceeded']))
    assert.ok((await storageUsed(app, projectId)) <= quota)
    assert.equal(await app.db.quotaReservation.count(), 0, 'every fallback reservation was released')
  } finally {
    await redis.start()
  }
})

test('Redis down during a job: its checkpoints are reserved through PostgreSQL and recorded meanwhile, with an event', async () => {
  const job = await createTransferJob(app, key, fileId, { n_epochs: 5, batch_size: 8 })
  await waitFor(async () => (await app.db.checkpoint.count({ where: { jobId: job.id } })) >= 1, 120_000, 'a checkpoint')
  await redis.stop()
  try {
    const before = await app.db.checkpoint.count({ where: { jobId: job.id } })
    assert.ok(before < 4, 'the job was still training when Redis stopped')
    await waitFor(
      async () => (await app.db.checkpoint.count({ where: { jobId: job.id } })) >= before + 2,
      60_000,
      'checkpoints recorded while Redis is down',
    )
    const said = await app.db.jobEvent.findFirst({
      where: {
        jobId: job.id,
        message: { startsWith: 'Redis is unavailable: checkpoint and model bytes are reserved' },
      },
    })
    assert.ok(said, 'the job says its reservations go through PostgreSQL')
  } finally {
    await redis.start()
  }
  const done = await waitForTerminal(app, job.id)
  assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  assert.equal(await app.db.checkpoint.count({ where: { jobId: job.id } }), 5, 'no checkpoint was lost')
  assert.equal(await app.db.quotaReservation.count(), 0)
})
