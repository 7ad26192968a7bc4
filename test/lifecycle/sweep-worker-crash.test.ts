// Fault injection for sweeps (issue 18): the worker running a sweep's trial is SIGKILLed mid-training; the
// trial is taken over by the other worker and resumes from its checkpoint like any job, and the sweep
// neither double-counts nor loses a trial. Short lock, stall and reconcile timings keep it to seconds.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { type CrashRig, startCrashRig } from '../helpers/crash-rig.js'
import { bearer, waitFor } from '../helpers/env.js'
import type { WorkerProcess } from '../helpers/worker-process.js'

let rig: CrashRig
let app: FastifyInstance
let key: string
let fileId: string
let workers: WorkerProcess[]
let getJson: CrashRig['getJson']

before(async () => {
  rig = await startCrashRig('sweepcrash', { digits: 3000, overrides: { RECONCILE_INTERVAL_MS: '1000' } })
  ;({ app, key, fileId, workers, getJson } = rig)
})

after(async () => {
  await rig?.close()
})

test('SIGKILL of the worker running a sweep trial: the trial resumes on the other worker, the sweep counts each trial once', async () => {
  const maxTrials = 3
  const res = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/sweeps',
    headers: bearer(key),
    payload: {
      model: 'mnist-cnn',
      training_file: fileId,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 3, batch_size: 32 } } },
      metric: 'val_accuracy',
      goal: 'maximize',
      seed: 5,
      search_space: { 'hyperparameters.learning_rate': { values: [0.001, 0.002, 0.004] } },
      strategy: 'grid',
      max_trials: maxTrials,
      max_parallel: 1,
      keep_all_models: true,
    },
  })
  assert.equal(res.statusCode, 200, res.body)
  const sweepId = res.json().id as string

  // the first trial running with at least one epoch checkpointed
  const victim = await waitFor(
    async () => {
      const j = await app.db.fineTuningJob.findFirst({ where: { sweepId, status: 'running' } })
      return j && (await app.db.checkpoint.count({ where: { jobId: j.id } })) >= 1 && j
    },
    60_000,
    'a trial running with a checkpoint',
  )
  assert.equal(victim.attempt, 1)
  const owner = workers.find((w) => w.pid === victim.workerPid)
  assert.ok(owner, 'the trial runs on one of our workers')
  await owner.kill('SIGKILL')
  workers.splice(workers.indexOf(owner), 1)

  const done = await waitFor(
    async () => {
      const s = await getJson(`/v1/fine_tuning/sweeps/${sweepId}`)
      return s.status !== 'running' && s
    },
    120_000,
    'the sweep to end',
  )
  assert.equal(done.status, 'succeeded', JSON.stringify(done))
  assert.deepEqual(done.progress, {
    trials_total: maxTrials,
    trials_created: maxTrials,
    trials_done: maxTrials,
    trials_succeeded: maxTrials,
  })

  // exactly one job per planned trial, each succeeded with its own model
  const jobs = await app.db.fineTuningJob.findMany({ where: { sweepId }, orderBy: { sweepTrial: 'asc' } })
  assert.deepEqual(
    jobs.map((j) => j.sweepTrial),
    [...Array(maxTrials).keys()],
  )
  for (const j of jobs) {
    assert.equal(j.status, 'succeeded', `trial ${j.sweepTrial}: ${j.errorCode}: ${j.errorMessage}`)
    assert.ok(j.fineTunedModelId, `trial ${j.sweepTrial} keeps its model`)
  }

  // the killed trial was taken over and resumed from a checkpoint
  const killed = jobs.find((j) => j.id === victim.id)!
  assert.equal(killed.attempt, 2)
  assert.notEqual(killed.workerPid, owner.pid)
  assert.ok(killed.resumeCheckpointId, 'resumed from a checkpoint')
  const jobEvents = (await getJson(`/v1/fine_tuning/jobs/${victim.id}/events?limit=100`)).data as { message: string }[]
  assert.ok(jobEvents.some((e) => /stopped responding; attempt 2 .* resumes from the checkpoint/.test(e.message)))
  for (const name of ['loss', 'val_accuracy'])
    assert.equal(await app.db.metric.count({ where: { jobId: victim.id, name } }), 3, `one ${name} row per epoch`)

  // the sweep's own log: one trial_started and one trial_ended per trial, one ended
  const events = (await getJson(`/v1/fine_tuning/sweeps/${sweepId}/events?limit=100`)).data as {
    type: string
    data: { trial?: number } | null
  }[]
  const count = (type: string) => events.filter((e) => e.type === type).length
  assert.equal(count('trial_started'), maxTrials, JSON.stringify(events))
  assert.equal(count('trial_ended'), maxTrials, JSON.stringify(events))
  for (const type of ['trial_started', 'trial_ended'])
    assert.deepEqual(
      events
        .filter((e) => e.type === type)
        .map((e) => e.data?.trial)
        .sort(),
      [...Array(maxTrials).keys()],
      `one ${type} per trial index`,
    )
  assert.equal(count('ended'), 1)
  assert.equal(count('early_terminated'), 0)
})
