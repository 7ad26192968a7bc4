// Fault injection with real worker processes: a worker SIGKILLed mid-training loses the job to another
// worker, which resumes it from the last checkpoint; a worker sent SIGTERM hands its job back without
// spending an attempt. Short lock and stall timings make each run in seconds.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { type CrashRig, startCrashRig } from '../helpers/crash-rig.js'
import { bearer, type TestEnv, waitFor } from '../helpers/env.js'
import { isAlive, startWorkerProcess, type WorkerProcess } from '../helpers/worker-process.js'

let rig: CrashRig
let env: TestEnv
let app: FastifyInstance
let key: string
let fileId: string
let workers: WorkerProcess[]
let getJson: CrashRig['getJson']

before(async () => {
  rig = await startCrashRig('crash', { digits: 8000 })
  ;({ env, app, key, fileId, workers, getJson } = rig)
})

after(async () => {
  await rig?.close()
})

async function createJob(nEpochs: number) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: bearer(key),
    payload: {
      model: 'mnist-cnn',
      training_file: fileId,
      seed: 3,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: nEpochs, batch_size: 16 } } },
    },
  })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().id as string
}

const row = (jobId: string) => app.db.fineTuningJob.findUniqueOrThrow({ where: { id: jobId } })

async function waitForCheckpoints(jobId: string, n: number) {
  return waitFor(async () => (await app.db.checkpoint.count({ where: { jobId } })) >= n, 120_000, `${n} checkpoints`)
}

async function assertCleanMetrics(jobId: string, nEpochs: number) {
  for (const name of ['loss', 'accuracy', 'val_loss', 'val_accuracy'])
    assert.equal(await app.db.metric.count({ where: { jobId, name } }), nEpochs, `one ${name} row per epoch`)
  const dupes = await app.db.$queryRaw<{ n: bigint }[]>`
    SELECT count(*) AS n FROM (SELECT 1 FROM metrics WHERE job_id = ${jobId} GROUP BY step, name HAVING count(*) > 1) d`
  assert.equal(Number(dupes[0].n), 0)
  assert.equal(await app.db.checkpoint.count({ where: { jobId } }), nEpochs, 'one checkpoint per epoch')
}

test('SIGKILL of the worker mid-training: the other worker resumes from the last checkpoint and finishes', async () => {
  const nEpochs = 6
  const jobId = await createJob(nEpochs)
  await waitForCheckpoints(jobId, 2)
  const before = await row(jobId)
  assert.equal(before.status, 'running')
  assert.equal(before.attempt, 1)
  const owner = workers.find((w) => w.pid === before.workerPid)
  assert.ok(owner, 'the job runs on one of our workers')
  const trainer = before.trainerPid
  assert.ok(isAlive(trainer), 'its training process runs')

  const killedAt = Date.now()
  await owner.kill('SIGKILL')
  // The orphaned training process notices its parent is gone and exits: no compute is left behind.
  await waitFor(async () => !isAlive(trainer), 10_000, 'the orphaned training process to exit')
  const resumed = await waitFor(
    async () => {
      const j = await row(jobId)
      return j.attempt === 2 && j.status === 'running' && j
    },
    60_000,
    'another worker to take the job over',
  )
  const resumeMs = Date.now() - killedAt
  assert.notEqual(resumed.workerPid, owner.pid)
  assert.ok(resumed.resumeCheckpointId, 'resumes from a checkpoint')

  const done = await waitFor(
    async () => {
      const j = await row(jobId)
      return ['succeeded', 'failed', 'cancelled'].includes(j.status) && j
    },
    180_000,
    'the job to finish',
  )
  assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  assert.equal(done.attempt, 2)
  await assertCleanMetrics(jobId, nEpochs)
  const events = (await getJson(`/v1/fine_tuning/jobs/${jobId}/events?limit=100`)).data as { message: string }[]
  assert.ok(
    events.some((e) => /stopped responding; attempt 2 .* resumes from the checkpoint of epoch \d/.test(e.message)),
  )
  console.log(`# resume after SIGKILL: job running again on another worker ${resumeMs} ms after the kill`)
  workers.splice(workers.indexOf(owner), 1)
})

test('SIGTERM of the worker mid-training: the job goes back to the queue without spending an attempt', async () => {
  workers.push(await startWorkerProcess(env.env))
  const nEpochs = 5
  const jobId = await createJob(nEpochs)
  await waitForCheckpoints(jobId, 1)
  const before = await row(jobId)
  const owner = workers.find((w) => w.pid === before.workerPid)
  assert.ok(owner)
  assert.equal(before.attempt, 1)
  const t0 = Date.now()
  const exit = await owner.kill('SIGTERM')
  assert.equal(exit.code, 0, `the worker exits cleanly:\n${owner.output().slice(-2000)}`)
  assert.ok(Date.now() - t0 < 15_000, 'it stops within seconds')
  const events = (await getJson(`/v1/fine_tuning/jobs/${jobId}/events?limit=100`)).data as { message: string }[]
  assert.ok(
    events.some((e) => /shutting down: job handed back to the queue/.test(e.message)),
    'hand-back recorded',
  )

  const done = await waitFor(
    async () => {
      const j = await row(jobId)
      return ['succeeded', 'failed', 'cancelled'].includes(j.status) && j
    },
    180_000,
    'the job to finish on the other worker',
  )
  assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  assert.equal(done.attempt, 1, 'the hand-back did not spend an attempt')
  assert.notEqual(done.workerPid, owner.pid)
  await assertCleanMetrics(jobId, nEpochs)
  workers.splice(workers.indexOf(owner), 1)
})
