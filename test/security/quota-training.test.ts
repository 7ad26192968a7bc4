// Quotas are exact for what training writes (issue 13, item 5), on a real worker process: a checkpoint or
// the fine-tuned model that would pass the project's storage quota fails the job `storage_quota_exceeded`;
// the checkpoints recorded before it stay listed, and the worker process goes on.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { resultFileId } from '../../src/lib/ids.js'
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
import { TERMINAL } from '../helpers/jobs.js'
import { tabularCsv } from '../helpers/memory-fixtures.js'
import { auditProjectStorage } from '../helpers/storage-audit.js'
import { isAlive, startWorkerProcess, type WorkerProcess } from '../helpers/worker-process.js'

let env: TestEnv
let app: FastifyInstance
let worker: WorkerProcess
let projectId: string
let key: string
let fileId: string

before(async () => {
  env = await createTestEnv('quota_training')
  app = await buildTestApp(env.config)
  ;({ projectId, key } = await createProjectKey(app, 'quota-training'))
  worker = await startWorkerProcess(env.env)
  const body = multipart({ purpose: 'fine-tune' }, { name: 'rows.csv', content: tabularCsv(300, 8, 3) })
  const up = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  assert.equal(up.statusCode, 201, up.body)
  fileId = up.json().id
  await waitFor(async () => (await get(`/v1/files/${fileId}`)).status === 'processed', 60_000, 'file validation')
})

after(async () => {
  await worker?.kill('SIGKILL')
  await app?.close()
  await env?.cleanup()
})

async function get(url: string) {
  return (await app.inject({ method: 'GET', url, headers: bearer(key) })).json()
}

async function setQuota(bytes: number) {
  const res = await app.inject({
    method: 'PATCH',
    url: `/v1/admin/projects/${projectId}/limits`,
    headers: adminAuth,
    payload: { storage_quota_bytes: bytes },
  })
  assert.equal(res.statusCode, 200, res.body)
}

async function train(nEpochs: number) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: bearer(key),
    payload: {
      model: 'mlp-small',
      training_file: fileId,
      seed: 1,
      method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 32, n_epochs: nEpochs } } },
    },
  })
  assert.equal(res.statusCode, 200, res.body)
  const id = res.json().id as string
  return waitFor(
    async () => {
      const j = await get(`/v1/fine_tuning/jobs/${id}`)
      return TERMINAL.includes(j.status) && j
    },
    150_000,
    `job ${id} to finish`,
  )
}

const checkpointsOf = async (jobId: string) => (await get(`/v1/fine_tuning/jobs/${jobId}/checkpoints`)).data as any[]

/** Sizes one job of this model and data writes: a checkpoint and the fine-tuned model (the same for every job). */
let sizes: { checkpoint: number; model: number }

test('a job within the quota stores its checkpoints and model (and tells their sizes)', async () => {
  await setQuota(1_000_000_000)
  const job = await train(1)
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
  const [ckpt] = await app.db.checkpoint.findMany({ where: { jobId: job.id }, include: { artifact: true } })
  const model = await app.db.model.findFirstOrThrow({
    where: { id: job.fine_tuned_model },
    include: { artifact: true },
  })
  sizes = { checkpoint: Number(ckpt.artifact.bytes), model: Number(model.artifact!.bytes) }
  assert.ok(sizes.checkpoint > 100 && sizes.model > 100, JSON.stringify(sizes))
})

test('a checkpoint past the quota fails the job storage_quota_exceeded; the earlier checkpoints stay', async () => {
  // room for two checkpoints and half of a third
  await setQuota((await storageUsed(app, projectId)) + Math.floor(2.5 * sizes.checkpoint))
  const job = await train(5)
  assert.equal(job.status, 'failed')
  assert.equal(job.error.code, 'storage_quota_exceeded', JSON.stringify(job.error))
  assert.match(job.error.message, /checkpoint of epoch 3 needs \d+ bytes/)
  assert.equal((await checkpointsOf(job.id)).length, 2, 'the two checkpoints written before stay listed')
  const kept = await app.db.checkpoint.findMany({ where: { jobId: job.id }, orderBy: { epoch: 'asc' } })
  assert.deepEqual(
    kept.map((c) => c.epoch),
    [1, 2],
  )
  assert.equal(await app.db.model.count({ where: { jobId: job.id } }), 0)
  const row = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: job.id } })
  assert.equal(row.workerPid, worker.pid, 'the job ran on our worker')
  assert.ok(isAlive(worker.pid) && worker.child.exitCode === null, 'the worker process goes on')
  assert.ok(
    (await storageUsed(app, projectId)) <=
      (await app.db.project.findUniqueOrThrow({ where: { id: projectId } })).storageQuotaBytes!,
  )
})

test('a model past the quota fails the job storage_quota_exceeded; its checkpoints stay; the worker takes the next job', async () => {
  // room for both checkpoints, not for the model
  await setQuota((await storageUsed(app, projectId)) + 2 * sizes.checkpoint + Math.floor(sizes.model / 2))
  const job = await train(2)
  assert.equal(job.status, 'failed')
  assert.equal(job.error.code, 'storage_quota_exceeded', JSON.stringify(job.error))
  assert.match(job.error.message, /fine-tuned model needs \d+ bytes/)
  assert.equal((await checkpointsOf(job.id)).length, 2)
  assert.equal(await app.db.model.count({ where: { jobId: job.id } }), 0)
  assert.equal(await app.db.file.count({ where: { id: resultFileId(job.id) } }), 0, 'no result file either')

  await setQuota(1_000_000_000)
  const next = await train(1)
  assert.equal(next.status, 'succeeded', JSON.stringify(next.error))
  const row = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: next.id } })
  assert.equal(row.workerPid, worker.pid, 'the same worker process')
})

test('every byte the jobs stored is counted in the project usage (checkpoints, models, result files; none stray)', async () => {
  const audit = await auditProjectStorage(app, projectId)
  assert.deepEqual(audit.unknown, [], 'objects no project owns')
  assert.equal(audit.bytes, await storageUsed(app, projectId), JSON.stringify(audit.objects, null, 1))
})
