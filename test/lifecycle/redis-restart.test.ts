// Redis down when a job is created, and Redis restarted during a job, on a private redis-server with an
// append-only file: no lost job, no 500, the job completes.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { bearer, buildTestApp, createProjectKey, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
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
