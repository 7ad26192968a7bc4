// The worker registry as the API sees it (GET /v1/admin/workers), the unserved-job notice, and
// GET /metrics, with a real worker (in this process) on the real PostgreSQL and Redis.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { checkUnservedJobs, noWorkerReason } from '../../src/modules/workers/unserved-jobs.js'
import { registerWorker } from '../../src/modules/workers/worker-registry.js'
import { startWorker, type WorkerHandle } from '../../workers/worker.js'
import { adminAuth, bearer, buildTestApp, createProjectKey, createTestEnv, type TestEnv } from '../helpers/env.js'
import { createTransferJob, uploadDigits, waitForTerminal } from '../helpers/jobs.js'

const METRICS_TOKEN = 'metrics-token-0123456789abcdef'
let env: TestEnv
let app: FastifyInstance
let key: string
let work: string
let worker: WorkerHandle | null = null

before(async () => {
  env = await createTestEnv('registry', { WORKER_HEARTBEAT_MS: '300', METRICS_TOKEN })
  app = await buildTestApp(env.config)
  ;({ key } = await createProjectKey(app))
  work = await mkdtemp(join(tmpdir(), 'refit-registry-'))
})

after(async () => {
  await worker?.close()
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

const listWorkers = async () => {
  const res = await app.inject({ method: 'GET', url: '/v1/admin/workers', headers: adminAuth })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as { object: string; data: any[] }
}

const metrics = async (token = METRICS_TOKEN) => {
  const res = await app.inject({ method: 'GET', url: '/metrics', headers: bearer(token) })
  assert.equal(res.statusCode, 200, res.body)
  assert.match(String(res.headers['content-type']), /^text\/plain/)
  return res.body
}

test('a worker registers itself with what it runs on, and leaves on a graceful close', async () => {
  assert.deepEqual((await listWorkers()).data, [])
  worker = await startWorker(env.config)
  const list = await listWorkers()
  assert.equal(list.object, 'list')
  assert.equal(list.data.length, 1)
  const w = list.data[0]
  assert.equal(w.pid, process.pid)
  assert.equal(w.role, 'worker')
  assert.equal(w.resource_class, 'cpu')
  assert.equal(w.device, 'cpu')
  assert.equal(w.backend, worker.backend.backend)
  assert.equal(typeof w.capabilities.depthwiseConvGradients, 'boolean')
  assert.equal(w.throughput_samples_per_second, null)
  assert.deepEqual(w.current_jobs, [])
  assert.equal(w.alive, true)
  assert.ok(Math.abs(w.last_heartbeat_at - Date.now() / 1000) < 5)
  // heartbeats keep it fresh
  await new Promise((r) => setTimeout(r, 700))
  assert.ok((await listWorkers()).data[0].last_heartbeat_at >= w.last_heartbeat_at)

  const asProject = await app.inject({ method: 'GET', url: '/v1/admin/workers', headers: bearer(key) })
  assert.equal(asProject.statusCode, 403)
})

test('GET /metrics: admin token or METRICS_TOKEN; queue depth, workers, HTTP latency', async () => {
  const none = await app.inject({ method: 'GET', url: '/metrics' })
  assert.equal(none.statusCode, 401)
  const wrong = await app.inject({ method: 'GET', url: '/metrics', headers: bearer(key) })
  assert.equal(wrong.statusCode, 403, 'a project key is not enough')
  assert.equal(wrong.json().error.code, 'admin_required')
  const garbage = await app.inject({ method: 'GET', url: '/metrics', headers: bearer('not-a-token-at-all') })
  assert.equal(garbage.statusCode, 401)
  await metrics(adminAuth.authorization.slice('Bearer '.length))
  const text = await metrics()
  assert.match(text, /refit_workers\{resource_class="cpu",backend="\w+"\} 1/)
  assert.match(text, /refit_queue_jobs\{queue="training",state="waiting"\} \d+/)
  assert.match(text, /refit_queue_jobs\{queue="training-gpu",state="active"\} 0/)
  assert.match(text, /refit_queue_jobs\{queue="evaluations",state="waiting"\} \d+/)
  assert.match(
    text,
    /refit_http_request_duration_seconds_bucket\{le="[\d.]+",method="GET",route="\/v1\/admin\/workers",status="200"\} \d+/,
  )
  assert.match(text, /# TYPE refit_job_duration_seconds histogram/)
})

test('a queued job with no live worker of its class says so, once; the notice clears when one is back', async () => {
  const fileId = await uploadDigits(app, key, work, 200)
  await worker!.close()
  worker = null
  assert.deepEqual((await listWorkers()).data, [], 'a graceful close removes the entry at once')

  const job = await createTransferJob(app, key, fileId, { n_epochs: 1 })
  assert.ok(await app.queues.training.getJob(job.id), 'a cpu job goes to the `training` queue')
  assert.equal(await app.queues.trainingGpu.getJob(job.id), undefined)
  const first = await checkUnservedJobs(app, { graceMs: 0 })
  const second = await checkUnservedJobs(app, { graceMs: 0 })
  assert.deepEqual(first.flagged, [job.id])
  assert.deepEqual(second.flagged, [])
  const got = (await app.inject({ method: 'GET', url: `/v1/fine_tuning/jobs/${job.id}`, headers: bearer(key) })).json()
  assert.equal(got.status, 'queued')
  assert.equal(got.status_reason, noWorkerReason('cpu'))
  assert.equal(got.status_reason, 'no live cpu worker: the job waits until one starts')
  const events = await app.db.jobEvent.findMany({
    where: { jobId: job.id, message: { startsWith: 'No live cpu worker' } },
  })
  assert.equal(events.length, 1)

  // a live cpu worker appears: the notice goes
  const fake = await registerWorker(
    app.redis,
    env.config.queuePrefix,
    { backend: 'cpu', device: 'cpu', resource_class: 'cpu', capabilities: {} },
    300,
    () => ({ currentJobs: [], jobThroughput: {}, lastThroughput: null }),
  )
  const third = await checkUnservedJobs(app, { graceMs: 0 })
  await fake.close()
  assert.deepEqual(third.cleared, [job.id])
  const row = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: job.id } })
  assert.equal(row.statusReason, null)

  // a real worker runs it; its throughput and the job's duration reach the registry and /metrics
  worker = await startWorker(env.config, { reconcileEveryMs: 500 })
  const done = await waitForTerminal(app, job.id, 120_000)
  assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  const w = (await listWorkers()).data[0]
  assert.equal(typeof w.throughput_samples_per_second, 'number')
  assert.ok(w.throughput_samples_per_second > 0)
  const text = await metrics()
  assert.match(text, /refit_job_duration_seconds_count\{method="transfer",status="succeeded"\} 1/)
  assert.match(text, /refit_job_duration_seconds_bucket\{method="transfer",status="succeeded",le="\+Inf"\} 1/)
})

test('resource_class routes a job: auto follows the live workers at enqueue, cpu and gpu are pinned, a gpu worker runs what reaches it', async () => {
  worker ??= await startWorker(env.config, { reconcileEveryMs: 500 }) // validates the upload
  const fileId = await uploadDigits(app, key, work, 200)
  await worker.close()
  worker = null
  const create = async (resource_class?: string) => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/fine_tuning/jobs',
      headers: bearer(key),
      payload: {
        model: 'mnist-cnn',
        training_file: fileId,
        seed: 5,
        ...(resource_class ? { resource_class } : {}),
        method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 1 } } },
      },
    })
    assert.equal(res.statusCode, 200, res.body)
    return res.json()
  }
  const queueOf = async (id: string) =>
    (await app.queues.trainingGpu.getJob(id)) ? 'gpu' : (await app.queues.training.getJob(id)) ? 'cpu' : null

  // no worker at all: auto is cpu; an explicit gpu job goes to the gpu queue and says it waits
  const autoNoGpu = await create()
  assert.equal(autoNoGpu.resource_class, 'auto')
  assert.equal(await queueOf(autoNoGpu.id), 'cpu')
  const pinnedGpu = await create('gpu')
  assert.equal(pinnedGpu.resource_class, 'gpu')
  assert.equal(await queueOf(pinnedGpu.id), 'gpu')
  const check = await checkUnservedJobs(app, { graceMs: 0 })
  assert.ok(check.flagged.includes(pinnedGpu.id))
  const waiting = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: pinnedGpu.id } })
  assert.equal(waiting.statusReason, noWorkerReason('gpu'))
  const bad = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: bearer(key),
    payload: { model: 'mnist-cnn', training_file: fileId, resource_class: 'tpu' },
  })
  assert.equal(bad.statusCode, 400)
  assert.equal(bad.json().error.param, 'resource_class')

  // a worker with WORKER_RESOURCE_CLASS=gpu (a routing label on this cpu machine) starts: it runs the
  // pinned job, and an auto job created now goes to it; a cpu-pinned job still waits for a cpu worker
  worker = await startWorker({ ...env.config, workerResourceClass: 'gpu' }, { reconcileEveryMs: 500 })
  assert.equal((await listWorkers()).data[0].resource_class, 'gpu')
  const autoWithGpu = await create()
  assert.equal(await queueOf(autoWithGpu.id), 'gpu')
  const pinnedCpu = await create('cpu')
  assert.equal(await queueOf(pinnedCpu.id), 'cpu')
  for (const id of [pinnedGpu.id, autoWithGpu.id]) {
    const done = await waitForTerminal(app, id, 180_000)
    assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  }
  const cleared = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: pinnedGpu.id } })
  assert.notEqual(cleared.statusReason, noWorkerReason('gpu'))
  for (const id of [autoNoGpu.id, pinnedCpu.id]) {
    const row = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id } })
    assert.equal(row.status, 'queued', 'a cpu job is not taken by the gpu worker')
  }
  // a retry keeps what the job asked for
  for (const id of [autoNoGpu.id, pinnedCpu.id])
    await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${id}/cancel`, headers: bearer(key) })
  const retried = await app.inject({
    method: 'POST',
    url: `/v1/fine_tuning/jobs/${pinnedCpu.id}/retry`,
    headers: bearer(key),
  })
  assert.equal(retried.statusCode, 200, retried.body)
  assert.equal(retried.json().resource_class, 'cpu')
  await app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${retried.json().id}/cancel`, headers: bearer(key) })
})
