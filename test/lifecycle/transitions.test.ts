// The lifecycle module against the real PostgreSQL and Redis, with transitions raced for real: an API
// side and a worker side, each with its own connection pool, fire at the same job at the same moment
// (cancel vs succeed vs fail, hand back vs cancel, claim vs claim vs cancel). Whatever the order, each
// transition that applied left exactly one job_events row, one ping seen by a Redis subscriber and, when
// it ended the job, one webhook_deliveries row (with its delivery job queued); the ones that lost left
// nothing. Plus the fixes that ride on the module: promotion pings, a job cancelled before it started
// reaches the duration histogram, one model per job.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { createDb, type Db } from '../../src/db/client.js'
import { newId } from '../../src/lib/ids.js'
import { jobUpdatesChannel } from '../../src/modules/jobs/job-updates.js'
import { promoteJobsWaitingOn } from '../../src/modules/jobs/jobs-service.js'
import type { Fence } from '../../src/modules/jobs/lifecycle/fence.js'
import * as lifecycle from '../../src/modules/jobs/lifecycle/lifecycle.js'
import { summarizeMetrics } from '../../src/modules/jobs/lifecycle/metrics-summary.js'
import { isTerminal, type TransitionName } from '../../src/modules/jobs/lifecycle/transitions.js'
import { jobDurationText } from '../../src/observability/job-metrics.js'
import { inTrainingQueue } from '../../src/queue/enqueue.js'
import { buildTestApp, createProjectKey, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance
let workerDb: Db
let api: lifecycle.LifecycleDeps
let worker: lifecycle.LifecycleDeps
let subscriber: Redis
let projectId: string
let fileId: string
const pings = new Map<string, number>()
const applied: { name: TransitionName; jobId: string; to: string }[] = []

before(async () => {
  env = await createTestEnv('transitions')
  app = await buildTestApp(env.config)
  workerDb = createDb(env.config.databaseUrl, 5)
  api = app
  // the worker's side: its own pool, as a worker process has
  worker = { db: workerDb, redis: app.redis, config: app.config, queues: app.queues, log: app.log }
  subscriber = new Redis(env.config.redisUrl)
  await subscriber.subscribe(jobUpdatesChannel(env.config.queuePrefix))
  subscriber.on('message', (_c, jobId: string) => pings.set(jobId, (pings.get(jobId) ?? 0) + 1))
  lifecycle.onTransition((t) => applied.push(t))
  ;({ projectId } = await createProjectKey(app, 'transitions'))
  fileId = newId('file')
  await app.db.file.create({
    data: {
      id: fileId,
      projectId,
      filename: 'd.csv',
      purpose: 'fine-tune',
      format: 'csv',
      bytes: 10n,
      sha256: '0'.repeat(64),
      status: 'processed',
      stats: { rows: 100, image_shape: [28, 28, 1] },
    },
  })
  // a webhook on every terminal status, created before any job finishes
  await app.db.webhook.create({
    data: {
      id: newId('wh'),
      projectId,
      url: 'https://example.com/hook',
      secret: 'whsec_test',
      events: ['succeeded', 'failed', 'cancelled'],
      createdAt: new Date(Date.now() - 60_000),
    },
  })
})

after(async () => {
  subscriber?.disconnect()
  await workerDb?.$disconnect()
  await app?.close()
  await env?.cleanup()
})

const HP = {
  n_epochs: 2,
  batch_size: 16,
  learning_rate: 0.001,
  validation_split: 0.1,
  optimizer: 'adam',
  early_stopping: null,
}

async function newJob(ready = true) {
  const id = newId('ftjob')
  await lifecycle.createJob(
    api,
    {
      id,
      projectId,
      baseModelId: 'mnist-cnn',
      trainingFileId: fileId,
      method: { type: 'transfer', transfer: { head: { hidden_units: 128, dropout: 0.5 } } },
      hyperparameters: HP,
      seed: 1,
    },
    { ready, message: `Created transfer job ${id}` },
  )
  // the creation's ping has arrived before the race starts
  await waitFor(async () => (pings.get(id) ?? 0) >= 1, 5_000, 'creation ping')
  return id
}

async function claimed(jobId: string): Promise<Fence> {
  const fence = await lifecycle.claim(
    worker,
    jobId,
    { status: 'queued', attempt: 0 },
    {
      workerPid: 1,
      startedAt: null,
      resumeCheckpointId: null,
      statusReason: null,
      event: { level: 'info', message: 'Training started' },
    },
  )
  assert.ok(fence)
  return fence
}

const trained = (): lifecycle.TrainedModel => ({
  artifact: { path: `models/${newId('art')}`, sha256: 'a'.repeat(64), bytes: 100 },
  metadata: { classes: ['a', 'b'], input_shape: [4] },
  trainedSamples: 90,
  evaluation: { accuracy: 0.9, samples: 10 },
  bestEpoch: null,
  backend: 'cpu',
  seconds: 1,
})

/** A random pause of 0-11 ms, so that either side of a race may win. */
const jitter = () => new Promise((r) => setTimeout(r, Math.floor(Math.random() * 12)))

interface Counts {
  events: number
  pings: number
  deliveries: number
}

async function counts(jobId: string): Promise<Counts> {
  return {
    events: await app.db.jobEvent.count({ where: { jobId } }),
    pings: pings.get(jobId) ?? 0,
    deliveries: await app.db.webhookDelivery.count({ where: { jobId } }),
  }
}

/**
 * Runs `race` on a job and checks: every applied transition added exactly one event, one ping and, if it
 * ended the job, one delivery (with its queue job); nothing else was added. Returns the transitions that won.
 */
async function race(jobId: string, calls: () => Promise<unknown>[]): Promise<TransitionName[]> {
  const before = await waitFor(
    async () => {
      const c = await counts(jobId)
      const made = applied.filter((t) => t.jobId === jobId).length
      return c.pings === made ? c : null // every ping so far has arrived
    },
    5_000,
    'pings of the set-up',
  )
  const start = applied.length
  await Promise.all(calls())
  const won = applied.slice(start).filter((t) => t.jobId === jobId)
  const terminal = won.filter((t) => isTerminal(t.to)).length
  const expected = {
    events: before.events + won.length,
    pings: before.pings + won.length,
    deliveries: before.deliveries + terminal,
  }
  await waitFor(async () => (await counts(jobId)).pings >= expected.pings, 5_000, 'pings')
  await new Promise((r) => setTimeout(r, 100)) // no late extra ping
  assert.deepEqual(await counts(jobId), expected, won.map((t) => t.name).join(', '))
  assert.ok(terminal <= 1, 'a job ends once')
  for (const d of await app.db.webhookDelivery.findMany({ where: { jobId } }))
    assert.ok(await app.queues.webhooks.getJob(d.id), 'each delivery has its queue job')
  return won.map((t) => t.name)
}

function tally(outcomes: Map<string, number>, won: TransitionName[]) {
  const k = won.join('+') || 'none'
  outcomes.set(k, (outcomes.get(k) ?? 0) + 1)
}

test('cancel vs succeed vs fail: one terminal status; one event and ping per applied transition; one delivery', async () => {
  const outcomes = new Map<string, number>()
  for (let i = 0; i < 8; i++) {
    const jobId = await newJob()
    const fence = await claimed(jobId)
    const won = await race(jobId, () => [
      jitter().then(() => lifecycle.succeed(worker, fence, trained())),
      jitter().then(() => lifecycle.cancelByUser(api, jobId)),
      jitter().then(() => lifecycle.fail(worker, fence, 'training_diverged', 'loss is NaN')),
    ])
    tally(outcomes, won)
    const job = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: jobId } })
    assert.ok(isTerminal(job.status), job.status)
    assert.equal(await app.db.webhookDelivery.count({ where: { jobId } }), 1)
    if (job.status === 'succeeded') {
      const model = await app.db.model.findUniqueOrThrow({ where: { jobId } })
      assert.equal(job.fineTunedModelId, model.id)
    }
  }
  console.log('cancel/succeed/fail outcomes:', Object.fromEntries(outcomes))
})

test('hand back vs cancel, then the worker finishes the cancel: the job ends cancelled once', async () => {
  const outcomes = new Map<string, number>()
  for (let i = 0; i < 8; i++) {
    const jobId = await newJob()
    const fence = await claimed(jobId)
    const first = await race(jobId, () => [
      jitter().then(() => lifecycle.handBack(worker, fence, 1)),
      jitter().then(() => lifecycle.cancelByUser(api, jobId)),
    ])
    // what the worker does next: finish the cancel it heard about (refused if it handed the job back),
    // while the user cancels again (a queued job is cancelled at once)
    const second = await race(jobId, () => [
      jitter().then(() => lifecycle.finishCancel(worker, fence, 'the training process stopped')),
      jitter().then(() => lifecycle.cancelByUser(api, jobId)),
    ])
    tally(outcomes, [...first, ...second])
    const job = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: jobId } })
    assert.equal(job.status, 'cancelled')
    assert.equal(await app.db.webhookDelivery.count({ where: { jobId } }), 1)
  }
  console.log('hand back/cancel outcomes:', Object.fromEntries(outcomes))
})

test('pause vs pause on a running job, then finish the pause vs succeed vs cancel: paused sends no webhook; resume queues it', async () => {
  const outcomes = new Map<string, number>()
  let paused = 0
  for (let i = 0; i < 10; i++) {
    const jobId = await newJob()
    const fence = await claimed(jobId)
    const first = await race(jobId, () => [
      jitter().then(() => lifecycle.pauseByUser(api, jobId)),
      jitter().then(() => lifecycle.pauseByUser(api, jobId)),
    ])
    assert.deepEqual(first, ['request_pause'], 'one of two pauses applies')
    // the training process stopped at the pause, or finished first, while the user cancels; the last
    // iteration pauses for sure
    const last = i === 9 && !paused
    const second = await race(jobId, () => [
      jitter().then(() => lifecycle.finishPause(worker, fence)),
      ...(last
        ? []
        : [
            jitter().then(() => lifecycle.succeed(worker, fence, trained())),
            jitter().then(() => lifecycle.cancelByUser(api, jobId)),
          ]),
    ])
    tally(outcomes, second)
    const job = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: jobId } })
    assert.ok(['paused', 'succeeded', 'cancelling', 'cancelled'].includes(job.status), job.status)
    assert.equal(await app.db.webhookDelivery.count({ where: { jobId } }), isTerminal(job.status) ? 1 : 0)
    if (job.status === 'cancelling') await lifecycle.finishCancel(worker, fence, 'stopped')
    if (job.status !== 'paused') continue
    paused++
    assert.deepEqual(second, ['finish_pause'])
    assert.equal(job.statusReason, 'paused by user')
    assert.equal(job.workerPid, null)
    const resumed = await lifecycle.resume(api, jobId)
    assert.equal(resumed?.status, 'queued')
    assert.ok(await inTrainingQueue(app.queues, jobId), 'a resumed job is enqueued')
    assert.equal(await lifecycle.finishPause(worker, fence), null, 'the old attempt cannot pause it again')
    assert.equal(await lifecycle.resume(api, jobId), null, 'resume applies to a paused job only')
    assert.equal(await lifecycle.cancelByUser(api, jobId), 'cancel')
  }
  assert.ok(paused > 0)
  console.log('finish_pause/succeed/cancel outcomes:', Object.fromEntries(outcomes))
})

test('claim vs claim vs cancel on a queued job: at most one worker gets it', async () => {
  const outcomes = new Map<string, number>()
  const claimArgs = { workerPid: 1, startedAt: null, resumeCheckpointId: null, statusReason: null }
  for (let i = 0; i < 8; i++) {
    const jobId = await newJob()
    const fences: (Fence | null)[] = []
    const won = await race(jobId, () => [
      ...[1, 2].map((n) =>
        jitter()
          .then(() =>
            lifecycle.claim(
              n === 1 ? worker : api,
              jobId,
              { status: 'queued', attempt: 0 },
              {
                ...claimArgs,
                event: { level: 'info', message: `Training started on worker ${n}` },
              },
            ),
          )
          .then((f) => fences.push(f)),
      ),
      jitter().then(() => lifecycle.cancelByUser(api, jobId)),
    ])
    tally(outcomes, won)
    assert.ok(fences.filter(Boolean).length <= 1, 'one claim at most')
    const job = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: jobId } })
    assert.ok(['running', 'cancelling', 'cancelled'].includes(job.status), job.status)
    assert.equal(job.attempt, fences.some(Boolean) ? 1 : 0)
  }
  console.log('claim/claim/cancel outcomes:', Object.fromEntries(outcomes))
})

test('promotion pings; a job cancelled before it started and one rejected at validation reach the duration histogram', async () => {
  const waiting = await newJob(false)
  const before = pings.get(waiting) ?? 0
  await promoteJobsWaitingOn({ ...worker, storage: app.storage, config: app.config }, fileId)
  const job = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: waiting } })
  assert.equal(job.status, 'queued', `${job.errorCode}: ${job.errorMessage}`)
  await waitFor(async () => (pings.get(waiting) ?? 0) > before, 5_000, 'a ping for the promotion')
  assert.ok(await app.queues.training.getJob(waiting), 'promoted jobs are enqueued')

  const histogram = async (status: string) => {
    const m = new RegExp(`refit_job_duration_seconds_count\\{method="transfer",status="${status}"\\} (\\d+)`).exec(
      await jobDurationText(app.redis, env.config.queuePrefix),
    )
    return Number(m?.[1] ?? 0)
  }
  const cancelledBefore = await histogram('cancelled')
  assert.equal(await lifecycle.cancelByUser(api, waiting), 'cancel')
  assert.equal(await histogram('cancelled'), cancelledBefore + 1)
  assert.equal(await app.queues.training.getJob(waiting), undefined, 'a cancelled job leaves the queue')

  const rejected = await newJob(false)
  const failedBefore = await histogram('failed')
  assert.ok(
    await lifecycle.reject(worker, rejected, { code: 'file_not_ready', message: 'bad file', param: 'training_file' }),
  )
  assert.equal(await histogram('failed'), failedBefore + 1)
})

test('a replayed success keeps one model per job; a short model name taken by another job falls back to the full id', async () => {
  const a = await newJob()
  const fa = await claimed(a)
  const modelA = await lifecycle.succeed(worker, fa, trained())
  assert.ok(modelA)
  assert.equal(await lifecycle.succeed(worker, fa, trained()), null, 'a job succeeds once')
  // another job whose 8-character short id collides with the first one's model name
  const b = `ftjob-${a.slice(6, 14)}${'z'.repeat(16)}`
  await lifecycle.createJob(
    api,
    {
      id: b,
      projectId,
      baseModelId: 'mnist-cnn',
      trainingFileId: fileId,
      method: { type: 'transfer' },
      hyperparameters: HP,
      seed: 1,
    },
    { ready: true, message: 'Created' },
  )
  const fb = await claimed(b)
  const modelB = await lifecycle.succeed(worker, fb, trained())
  assert.ok(modelB && modelB !== modelA, `${modelB} vs ${modelA}`)
  assert.equal(modelB, `ft:mnist-cnn:refit:${b.slice(6)}`)
  assert.equal(
    (await app.db.model.findUniqueOrThrow({ where: { id: modelA! } })).jobId,
    a,
    'the first model is untouched',
  )
})

test('one definition of best: with early stopping it is the restored epoch; without, it names its epoch', () => {
  const rows = [
    [1, { loss: 1.0, accuracy: 0.6, val_loss: 0.9, val_accuracy: 0.7 }],
    [2, { loss: 0.7, accuracy: 0.8, val_loss: 0.5, val_accuracy: 0.86 }],
    [3, { loss: 0.5, accuracy: 0.9, val_loss: 0.6, val_accuracy: 0.9 }],
    [4, { loss: 0.4, accuracy: 0.95, val_loss: 0.7, val_accuracy: 0.88 }],
  ].flatMap(([epoch, m]) =>
    Object.entries(m as Record<string, number>).map(([name, value]) => ({
      step: (epoch as number) * 10,
      epoch: epoch as number,
      name,
      value,
    })),
  )
  const es = summarizeMetrics(rows, { earlyStopping: { monitor: 'val_loss', bestEpoch: 2 } })
  assert.equal(es.best?.epoch, 2)
  assert.equal(es.best_epoch, 2)
  assert.equal(es.delivered_epoch, 2, 'the model holds the restored epoch, and best is that epoch')
  assert.deepEqual(es.best_by, { metric: 'val_loss', mode: 'min', rule: 'early_stopping' })
  assert.equal(es.best?.val_accuracy, 0.86)
  assert.equal(es.final?.epoch, 4)

  const plain = summarizeMetrics(rows)
  assert.equal(plain.best?.epoch, 3)
  assert.equal(plain.best_epoch, 3)
  assert.equal(plain.delivered_epoch, 4, 'without early stopping the model holds the last epoch')
  assert.deepEqual(plain.best_by, { metric: 'val_accuracy', mode: 'max', rule: 'highest' })
  const noVal = summarizeMetrics(rows.filter((r) => !r.name.startsWith('val_')))
  assert.equal(noVal.best_by?.metric, 'accuracy')
  assert.equal(noVal.best?.epoch, 4)
})
