// Background work that must happen once per cluster does: the unserved-jobs check runs in one API
// process at a time (a Redis lease, handed on when its holder stops), and the reconcile job scheduler
// gives each tick to one of several consuming workers. Plus the queue registry: every queue is listed,
// and a payload is checked when it is added.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { startUnservedJobsCheck } from '../../src/modules/workers/unserved-jobs.js'
import { consume, enqueue, type PayloadOf, QUEUE_KEYS, QUEUE_NAMES, QUEUE_REGISTRY } from '../../src/queue/registry.js'
import { buildTestApp, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance

before(async () => {
  env = await createTestEnv('cluster-once')
  app = await buildTestApp(env.config)
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

test('the unserved-jobs check runs in one process at a time; another takes over when it stops', async () => {
  const passes: string[] = []
  const start = (name: string) =>
    startUnservedJobsCheck(app, { intervalMs: 100, graceMs: 0, onPass: () => passes.push(name) })
  const checks: Record<string, { stop(): void }> = { a: start('a'), b: start('b') }
  try {
    await waitFor(async () => passes.length >= 8, 10_000, 'eight passes')
    const holders = new Set(passes)
    assert.equal(holders.size, 1, `one holder, saw ${[...holders]}`)
    const [holder] = holders
    checks[holder].stop()
    const before = passes.length
    await waitFor(async () => passes.slice(before).some((o) => o !== holder), 10_000, 'the other process takes over')
  } finally {
    checks.a.stop()
    checks.b.stop()
  }
})

test('a scheduled reconcile tick runs on one of two consuming workers, not on both', async () => {
  const runs: string[] = []
  const workers = ['w1', 'w2'].map((name) =>
    consume('maintenance', env.config, async (_p, job) => {
      runs.push(`${name}:${job.id}`)
      return { ok: true }
    }),
  )
  try {
    await app.queues.maintenance.upsertJobScheduler(
      'reconcile',
      { every: 200 },
      { name: 'reconcile', data: { task: 'reconcile' }, opts: QUEUE_REGISTRY.maintenance.options },
    )
    await waitFor(async () => runs.length >= 5, 20_000, 'five ticks')
    const jobIds = runs.map((r) => r.split(':').slice(1).join(':'))
    assert.equal(new Set(jobIds).size, jobIds.length, `each tick ran once: ${runs}`)
  } finally {
    await app.queues.maintenance.removeJobScheduler('reconcile')
    await Promise.all(workers.map((w) => w.close()))
  }
})

test('the registry lists every queue (training-gpu included) and checks payloads on add', async () => {
  assert.deepEqual(QUEUE_NAMES, ['training', 'training-gpu', 'files', 'evaluations', 'webhooks', 'maintenance'])
  assert.deepEqual(Object.keys(app.queues).sort(), [...QUEUE_KEYS].sort())
  await assert.rejects(
    enqueue(app.queues, 'files', { fileId: 'not-an-id' } as PayloadOf<'files'>, 'x'),
    /bad file payload/,
  )
  const id = 'file-aaaaaaaaaaaaaaaaaaaaaaaa'
  await enqueue(app.queues, 'files', { fileId: id }, id)
  const job = await app.queues.files.getJob(id)
  assert.equal(job?.name, 'validate-file')
  assert.deepEqual(job?.opts.attempts, QUEUE_REGISTRY.files.options.attempts)
})
