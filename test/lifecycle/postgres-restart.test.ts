// PostgreSQL restarted during a job, on a private cluster: the API answers 503 (not 500) while it is
// down, the worker holds its writes until it returns, and the job completes without losing a metric.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { bearer, buildTestApp, createProjectKey, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { createTransferJob, uploadDigits, waitForTerminal } from '../helpers/jobs.js'
import { type PrivatePostgres, startPrivatePostgres } from '../helpers/private-services.js'
import { startWorkerProcess, type WorkerProcess } from '../helpers/worker-process.js'

let pg: PrivatePostgres
let env: TestEnv
let app: FastifyInstance
let worker: WorkerProcess
let key: string
let work: string

before(async () => {
  pg = await startPrivatePostgres()
  env = await createTestEnv('pg_restart', { DATABASE_URL: pg.url })
  app = await buildTestApp(env.config)
  ;({ key } = await createProjectKey(app))
  worker = await startWorkerProcess(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-pg-'))
})

after(async () => {
  await worker?.kill('SIGKILL')
  await app?.close()
  await env?.cleanup().catch(() => {})
  await pg?.destroy()
  if (work) await rm(work, { recursive: true, force: true })
})

test('PostgreSQL down mid-job: 503 with a stable code, then the job completes with every metric row', async () => {
  const fileId = await uploadDigits(app, key, work, 1500)
  const nEpochs = 6
  const job = await createTransferJob(app, key, fileId, { n_epochs: nEpochs, batch_size: 16 })
  await waitFor(async () => (await app.db.checkpoint.count({ where: { jobId: job.id } })) >= 1, 120_000, 'a checkpoint')

  await pg.stop()
  const res = await app.inject({ method: 'GET', url: `/v1/fine_tuning/jobs/${job.id}`, headers: bearer(key) })
  assert.equal(res.statusCode, 503, res.body)
  assert.equal(res.json().error.code, 'service_unavailable')
  assert.equal(res.headers['retry-after'], '5')
  assert.equal((await app.inject('/readyz')).statusCode, 503)
  await new Promise((r) => setTimeout(r, 3000))
  await pg.start()

  await waitFor(async () => (await app.inject('/readyz')).statusCode === 200, 30_000, 'readiness after restart')
  const done = await waitForTerminal(app, job.id)
  assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  for (const name of ['loss', 'accuracy', 'val_loss', 'val_accuracy'])
    assert.equal(await app.db.metric.count({ where: { jobId: job.id, name } }), nEpochs, `${name} rows`)
})
