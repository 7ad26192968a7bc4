// ASHA never stops a trial that has finished training. With max_parallel > 1 a trial can pass a rung alone,
// train to its last epoch, and still be `running` (saving its model) when its peers reach that rung and rank
// above it; it used to be judged at that rung then and end cancelled/early_terminated although it had
// completed. The same for a trial that its own early stopping ended. A trial still training below the cut-off
// is stopped as before. Real PostgreSQL and Redis; the trials are job rows with epoch metric rows, as a
// worker writes them (no training process: the decision is under test).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { newId } from '../../src/lib/ids.js'
import { addJobEvent } from '../../src/modules/jobs/job-events.js'
import { applyAsha } from '../../src/modules/sweeps/asha.js'
import { buildTestApp, createProjectKey, createTestEnv, type TestEnv } from '../helpers/env.js'
import { insertJobRow } from '../helpers/job-rows.js'

let env: TestEnv
let app: FastifyInstance

before(async () => {
  env = await createTestEnv('asha')
  app = await buildTestApp(env.config)
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

test('a trial that trained all its epochs, or stopped early by itself, is never early-terminated', async () => {
  const { projectId } = await createProjectKey(app, 'asha')
  const sweepId = newId('sweep')
  await app.db.sweep.create({ data: { id: sweepId, projectId, spec: {}, plan: [] } })
  const asha = { type: 'asha' as const, min_epochs: 1, reduction_factor: 2 }
  // n_epochs 3: rungs at epochs 1 and 2; val_accuracy per epoch
  const trials: [string, number[]][] = [
    ['finished its 3 epochs, worst at the rungs', [0.5, 0.55, 0.6]],
    ['best', [0.9, 0.95]],
    ['second', [0.8, 0.9]],
    ['still training, below the cut-off', [0.3, 0.35]],
    ['stopped by its own early stopping at epoch 2', [0.4, 0.45]],
  ]
  const ids: string[] = []
  for (const [i, [, values]] of trials.entries()) {
    const id = await insertJobRow(app.db, projectId, 'running')
    // test shortcut: a running trial as the sweep's pass reads it
    await app.db.fineTuningJob.update({
      where: { id },
      data: {
        sweepId,
        sweepTrial: i,
        sweepValues: {},
        hyperparameters: { n_epochs: 3, batch_size: 16, learning_rate: 0.001, validation_split: 0.1 },
      },
    })
    await app.db.metric.createMany({
      data: values.map((value, e) => ({ jobId: id, step: (e + 1) * 10, epoch: e + 1, name: 'val_accuracy', value })),
    })
    ids.push(id)
  }
  await addJobEvent(
    app.db,
    ids[4]!,
    'info',
    'early stopping at epoch 2: val_loss has not improved by more than 0 for 1 epochs; best epoch 1 (val_loss 0.9)',
    { epoch: 2, best_epoch: 1, best: 0.9, monitor: 'val_loss' },
  )
  const rows = await app.db.fineTuningJob.findMany({ where: { sweepId }, orderBy: { sweepTrial: 'asc' } })

  const stopped = await applyAsha(app, { id: sweepId, metric: 'val_accuracy', goal: 'maximize', asha }, rows)

  assert.deepEqual(stopped, [ids[3]], 'only the trial still training below the cut-off')
  const after = await app.db.fineTuningJob.findMany({ where: { sweepId }, orderBy: { sweepTrial: 'asc' } })
  assert.deepEqual(
    after.map((t) => [trials[t.sweepTrial!]![0], t.status, t.statusReason]),
    trials.map(([what], i) => (i === 3 ? [what, 'cancelling', 'early_terminated'] : [what, 'running', null])),
  )
  const events = await app.db.sweepEvent.findMany({ where: { sweepId } })
  assert.deepEqual(
    events.map((e) => e.key),
    ['early_terminated:3'],
  )
  // a later pass (the trials' next epochs, the reconcile pass) decides the same
  const again = await app.db.fineTuningJob.findMany({ where: { sweepId }, orderBy: { sweepTrial: 'asc' } })
  assert.deepEqual(await applyAsha(app, { id: sweepId, metric: 'val_accuracy', goal: 'maximize', asha }, again), [])
})

test("the baseline trial (a lone job's defaults) is ranked at the rungs but never stopped", async () => {
  const { projectId } = await createProjectKey(app, 'asha-baseline')
  const sweepId = newId('sweep')
  await app.db.sweep.create({ data: { id: sweepId, projectId, spec: {}, plan: [] } })
  const ids: string[] = []
  // trial 0 (the baseline) and trial 2 fall below the cut-off at rung 1; trial 1 is the best there
  for (const [i, value] of [0.5, 0.9, 0.4].entries()) {
    const id = await insertJobRow(app.db, projectId, 'running')
    await app.db.fineTuningJob.update({
      where: { id },
      data: {
        sweepId,
        sweepTrial: i,
        sweepValues: {},
        hyperparameters: { n_epochs: 3, batch_size: 16, learning_rate: 0.001, validation_split: 0.1 },
      },
    })
    await app.db.metric.create({ data: { jobId: id, step: 10, epoch: 1, name: 'val_accuracy', value } })
    ids.push(id)
  }
  const rows = await app.db.fineTuningJob.findMany({ where: { sweepId }, orderBy: { sweepTrial: 'asc' } })
  const asha = { type: 'asha' as const, min_epochs: 1, reduction_factor: 3 }
  const stopped = await applyAsha(
    app,
    { id: sweepId, metric: 'val_accuracy', goal: 'maximize', asha, protectedTrial: 0 },
    rows,
  )
  assert.deepEqual(stopped, [ids[2]])
  const event = await app.db.sweepEvent.findFirstOrThrow({ where: { sweepId } })
  // the baseline counted among the three at the rung: the top 1 of 3 went on
  assert.equal((event.data as { trials_at_rung: number }).trials_at_rung, 3)
  assert.equal((await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: ids[0]! } })).status, 'running')
})
