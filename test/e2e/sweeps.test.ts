// Hyperparameter sweeps through the API and a real worker: the up-front refusals, the seeded plan, a grid
// sweep of three tiny supervised trials run two at a time to `succeeded` with its best trial, and cancel.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { planTrials } from '../../src/modules/sweeps/sweep-plan.js'
import type { CreateSweepBody } from '../../src/schemas/sweeps.js'
import { startWorker, type WorkerHandle } from '../../workers/worker.js'
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

let env: TestEnv
let app: FastifyInstance
let worker: WorkerHandle
let key: string
let projectId: string
let fileId: string
let url: string

interface SseMessage {
  id?: string
  event: string
  data: any
}

/** Reads an SSE stream until the server ends it, parsing id/event/data blocks. */
async function readStream(path: string, headers: Record<string, string>) {
  const res = await fetch(`${url}${path}`, { headers })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/)
  const messages: SseMessage[] = []
  let buffer = ''
  const decoder = new TextDecoder()
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true })
    for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, i)
      buffer = buffer.slice(i + 2)
      const m: SseMessage = { event: 'message', data: undefined }
      for (const line of block.split('\n')) {
        if (line.startsWith('id: ')) m.id = line.slice(4)
        else if (line.startsWith('event: ')) m.event = line.slice(7)
        else if (line.startsWith('data: ')) m.data = JSON.parse(line.slice(6))
      }
      if (m.data !== undefined) messages.push(m)
    }
  }
  return messages
}

/** 240 rows of two features, labelled by which side of a line they fall on (learnable in one epoch). */
function tinyCsv(): Buffer {
  const lines = ['a,b,label']
  let s = 7
  const rnd = () => {
    s = (s * 1103515245 + 12345) % 2 ** 31
    return s / 2 ** 31
  }
  for (let i = 0; i < 240; i++) {
    const a = rnd() * 2 - 1
    const b = rnd() * 2 - 1
    lines.push(`${a.toFixed(4)},${b.toFixed(4)},${a + b > 0 ? 'up' : 'down'}`)
  }
  return Buffer.from(lines.join('\n'))
}

const base = () => ({
  model: 'mlp-small',
  training_file: fileId,
  method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2, batch_size: 32 } } },
  metric: 'val_accuracy',
  goal: 'maximize',
  seed: 11,
})

const post = (payload: object) =>
  app.inject({ method: 'POST', url: '/v1/fine_tuning/sweeps', headers: bearer(key), payload })
const get = (url: string) => app.inject({ url, headers: bearer(key) })
const postJob = (payload: object) =>
  app.inject({ method: 'POST', url: '/v1/fine_tuning/jobs', headers: bearer(key), payload })

/** Waits for a sweep to end and asserts it succeeded; returns it. */
async function sweepSucceeded(id: string) {
  const done = await waitFor(
    async () => {
      const s = (await get(`/v1/fine_tuning/sweeps/${id}`)).json()
      return s.status !== 'running' && s
    },
    90_000,
    `sweep ${id} to end`,
  )
  assert.equal(done.status, 'succeeded', JSON.stringify(done))
  return done
}

/** A job's events, newest first (one page of 100). */
async function jobEventsOf(jobId: string): Promise<{ message: string; data: any }[]> {
  return (await get(`/v1/fine_tuning/jobs/${jobId}/events?limit=100`)).json().data
}

before(async () => {
  env = await createTestEnv('sweeps', { WORKER_CONCURRENCY: '2' })
  app = await buildTestApp(env.config)
  worker = await startWorker(env.config, { reconcileEveryMs: 500 })
  ;({ key, projectId } = await createProjectKey(app))
  url = await app.listen({ port: 0, host: '127.0.0.1' })
  const body = multipart({ purpose: 'fine-tune' }, { name: 'tiny.csv', content: tinyCsv() })
  const up = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  assert.equal(up.statusCode, 201, up.body)
  fileId = up.json().id
  await waitFor(
    async () => (await app.db.file.findUnique({ where: { id: fileId } }))?.status === 'processed',
    60_000,
    'file validation',
  )
})

after(async () => {
  await worker?.close()
  await app?.close()
  await env?.cleanup()
})

test('refusals before anything is created, each naming the field', async () => {
  const cases: [object, string, string][] = [
    [
      { search_space: { 'hyperparameters.learnin_rate': { values: [0.01] } }, strategy: 'grid', max_trials: 2 },
      'invalid_search_space',
      'search_space.hyperparameters.learnin_rate',
    ],
    [
      { search_space: { head: { values: [1] } }, strategy: 'grid', max_trials: 2 },
      'invalid_search_space',
      'search_space.head',
    ],
    [
      {
        search_space: { 'hyperparameters.learning_rate': { min: 0.1, max: 0.001, scale: 'log' } },
        strategy: 'random',
        max_trials: 2,
      },
      'invalid_search_space',
      'search_space.hyperparameters.learning_rate',
    ],
    [
      { search_space: { 'hyperparameters.learning_rate': { values: [] } }, strategy: 'random', max_trials: 2 },
      'invalid_search_space',
      'search_space.hyperparameters.learning_rate',
    ],
    [
      // a value the job contract refuses (learning_rate at most 1)
      { search_space: { 'hyperparameters.learning_rate': { values: [0.01, 5] } }, strategy: 'grid', max_trials: 2 },
      'invalid_search_space',
      'search_space.hyperparameters.learning_rate',
    ],
    [
      { search_space: { 'hyperparameters.learning_rate': { min: 0.001, max: 0.1 } }, strategy: 'grid', max_trials: 2 },
      'invalid_search_space',
      'search_space.hyperparameters.learning_rate',
    ],
    [
      {
        search_space: {
          'hyperparameters.learning_rate': { values: [0.1, 0.01] },
          'hyperparameters.batch_size': { values: [16, 32] },
        },
        strategy: 'grid',
        max_trials: 3,
      },
      'sweep_too_large',
      'max_trials',
    ],
    [
      { search_space: { 'hyperparameters.learning_rate': { values: [0.01] } }, strategy: 'random', max_trials: 51 },
      'sweep_too_large',
      'max_trials',
    ],
    [
      {
        search_space: { 'hyperparameters.validation_split': { values: [0, 0.2] } },
        strategy: 'grid',
        max_trials: 2,
      },
      'sweep_metric_unavailable',
      'metric',
    ],
    [
      {
        search_space: { 'hyperparameters.learning_rate': { values: [0.01] } },
        strategy: 'grid',
        max_trials: 1,
        early_termination: { type: 'asha', min_epochs: 2, reduction_factor: 3 },
      },
      'invalid_early_termination',
      'early_termination.min_epochs',
    ],
    [
      {
        search_space: { 'hyperparameters.learning_rate': { values: [0.01] } },
        strategy: 'grid',
        max_trials: 1,
        early_termination: { type: 'asha', min_epochs: 1, reduction_factor: 1 },
      },
      'invalid_early_termination',
      'early_termination.reduction_factor',
    ],
    [
      // a grid tries exactly its combinations
      {
        search_space: { 'hyperparameters.learning_rate': { values: [0.01] } },
        strategy: 'grid',
        max_trials: 1,
        baseline_trial: true,
      },
      'invalid_baseline_trial',
      'baseline_trial',
    ],
    [
      // n_epochs "auto" resolves from the 240 rows to 20: a first rung at 20 is never reached
      {
        method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 'auto', batch_size: 32 } } },
        search_space: { 'hyperparameters.learning_rate': { values: [0.01] } },
        strategy: 'grid',
        max_trials: 1,
        early_termination: { type: 'asha', min_epochs: 20, reduction_factor: 3 },
      },
      'invalid_early_termination',
      'early_termination.min_epochs',
    ],
  ]
  for (const [extra, code, param] of cases) {
    const res = await post({ ...base(), max_parallel: 1, ...extra })
    assert.equal(res.statusCode, 400, `${code}: ${res.body}`)
    assert.equal(res.json().error.code, code, res.body)
    assert.equal(res.json().error.param, param, res.body)
  }
  // a trial refused as a job by the job's own checks (the file) keeps the job's code
  const noFile = await post({
    ...base(),
    training_file: 'file-doesnotexist',
    search_space: { 'hyperparameters.learning_rate': { values: [0.01] } },
    strategy: 'grid',
    max_trials: 1,
    max_parallel: 1,
  })
  assert.equal(noFile.statusCode, 400, noFile.body)
  assert.equal(noFile.json().error.code, 'invalid_training_file')
  assert.equal(await app.db.sweep.count(), 0)
  assert.equal(await app.db.fineTuningJob.count(), 0)
})

test('the plan is seeded: the same spec and seed give the same values in the same order', () => {
  const spec = {
    ...base(),
    search_space: {
      'hyperparameters.learning_rate': { min: 0.0001, max: 0.1, scale: 'log' },
      'hyperparameters.batch_size': { min: 8, max: 64, type: 'int' },
      'hyperparameters.optimizer': { values: ['adam', 'sgd', 'rmsprop'] },
    },
    strategy: 'random',
    max_trials: 12,
    max_parallel: 1,
  } as unknown as CreateSweepBody
  const a = planTrials(spec, 11)
  assert.deepEqual(planTrials(spec, 11), a)
  assert.equal(a.length, 12)
  assert.notDeepEqual(planTrials(spec, 12), a)
  for (const t of a) {
    const lr = t['hyperparameters.learning_rate'] as number
    const bs = t['hyperparameters.batch_size'] as number
    assert.ok(lr >= 0.0001 && lr <= 0.1, `lr ${lr}`)
    assert.ok(Number.isInteger(bs) && bs >= 8 && bs <= 64, `batch ${bs}`)
  }
  assert.ok(new Set(a.map((t) => t['hyperparameters.optimizer'])).size > 1)
  // a baseline trial comes first; the draws after it are the same as without it
  const baseline = {
    'hyperparameters.learning_rate': 0.001,
    'hyperparameters.batch_size': 32,
    'hyperparameters.optimizer': 'adam',
  }
  const withBaseline = planTrials(spec, 11, baseline)
  assert.deepEqual(withBaseline, [baseline, ...a.slice(0, 11)])
  assert.deepEqual(planTrials(spec, 11, baseline), withBaseline)
  // a grid ignores it (createSweep refuses baseline_trial on a grid)
  const grid = {
    ...spec,
    strategy: 'grid',
    search_space: { 'hyperparameters.batch_size': { values: [8, 16] } },
  } as CreateSweepBody
  assert.deepEqual(planTrials(grid, 11, { 'hyperparameters.batch_size': 32 }), planTrials(grid, 11))
})

test('a grid sweep runs its trials at most two at a time and ends succeeded with the best trial', async () => {
  const res = await post({
    ...base(),
    search_space: { 'hyperparameters.learning_rate': { values: [0.05, 0.0001, 0.01] } },
    strategy: 'grid',
    max_trials: 3,
    max_parallel: 2,
    suffix: 'sweep',
  })
  assert.equal(res.statusCode, 200, res.body)
  const sweep = res.json()
  assert.match(sweep.id, /^sweep-/)
  assert.equal(sweep.status, 'running')
  assert.equal(sweep.progress.trials_total, 3)
  // followed live from its creation: the stream ends by itself after `ended`
  const streamed = readStream(`/v1/fine_tuning/sweeps/${sweep.id}/events?stream=true`, bearer(key))
  const done = await sweepSucceeded(sweep.id)
  assert.deepEqual(done.progress, { trials_total: 3, trials_created: 3, trials_done: 3, trials_succeeded: 3 })

  const trials = (await get(`/v1/fine_tuning/sweeps/${sweep.id}/trials?limit=2`)).json()
  assert.equal(trials.data.length, 2)
  assert.equal(trials.has_more, true)
  const rest = (await get(`/v1/fine_tuning/sweeps/${sweep.id}/trials?after=${trials.data[1].job.id}`)).json()
  const all = [...trials.data, ...rest.data]
  assert.deepEqual(
    all.map((t: { trial: number; values: object }) => [t.trial, t.values]),
    [0.05, 0.0001, 0.01].map((lr, i) => [i, { 'hyperparameters.learning_rate': lr }]),
  )
  // every trial is a normal job with the sampled value applied and the sweep's seed
  for (const t of all) {
    assert.equal(t.job.status, 'succeeded')
    assert.equal(t.job.seed, 11)
    assert.equal(t.job.sweep_id, sweep.id)
    assert.equal(t.job.method.supervised.hyperparameters.learning_rate, t.values['hyperparameters.learning_rate'])
  }
  // the best trial, recomputed from each job's own metric rows (no early stopping: the last epoch's)
  const finals = new Map<string, number>()
  for (const t of all) {
    const rows = (await get(`/v1/fine_tuning/jobs/${t.job.id}/metrics?name=val_accuracy`)).json().data as {
      step: number
      value: number
    }[]
    const last = rows.sort((x, y) => x.step - y.step).at(-1)!
    finals.set(t.job.id, last.value)
    assert.equal(t.metric_value, last.value)
  }
  const bestValue = Math.max(...finals.values())
  const bestJob = all.find((t: { job: { id: string } }) => finals.get(t.job.id) === bestValue)
  assert.equal(done.best_trial.job_id, bestJob.job.id)
  assert.equal(done.best_trial.metric_value, bestValue)
  assert.deepEqual(done.best_trial.values, bestJob.values)
  assert.equal(done.best_model, bestJob.job.fine_tuned_model)
  assert.equal(done.keep_all_models, false)

  // keep_all_models false: only the best trial's model is left; each loser's job says its model went
  const models = await app.db.model.findMany({
    where: { jobId: { in: all.map((t: { job: { id: string } }) => t.job.id) } },
  })
  for (const t of all) {
    const job = (await get(`/v1/fine_tuning/jobs/${t.job.id}`)).json()
    assert.deepEqual(job.sweep_values, t.values)
    const own = models.find((m) => m.jobId === t.job.id)!
    if (t.job.id === bestJob.job.id) {
      assert.equal(job.fine_tuned_model, own.id)
      assert.equal((await get(`/v1/models/${own.id}`)).statusCode, 200)
      continue
    }
    assert.equal(job.fine_tuned_model, null)
    assert.ok(own.deletedAt, `the model of trial ${t.trial} is deleted`)
    assert.equal((await get(`/v1/models/${own.id}`)).statusCode, 404)
    assert.equal(await app.db.checkpoint.count({ where: { jobId: t.job.id } }), 0)
    const events = await jobEventsOf(t.job.id)
    const pruned = events.find((e: { data: { sweep_pruned?: boolean } | null }) => e.data?.sweep_pruned)
    assert.ok(pruned, `a pruning event on trial ${t.trial}`)
    assert.equal(pruned.data.model, own.id)
  }

  // never more than max_parallel unfinished at once: at each trial's creation, count the others unfinished
  const rows = await app.db.fineTuningJob.findMany({ where: { sweepId: sweep.id }, orderBy: { sweepTrial: 'asc' } })
  for (const r of rows) {
    const open = rows.filter((o) => o.createdAt <= r.createdAt && (!o.finishedAt || o.finishedAt > r.createdAt))
    assert.ok(open.length <= 2, `${open.length} trials unfinished when trial ${r.sweepTrial} was created`)
  }
  // the third trial waited for one of the first two to end
  const firstEnd = Math.min(rows[0]!.finishedAt!.getTime(), rows[1]!.finishedAt!.getTime())
  assert.ok(rows[2]!.createdAt.getTime() >= firstEnd)

  const list = (await get('/v1/fine_tuning/sweeps')).json()
  assert.ok(list.data.some((s: { id: string }) => s.id === sweep.id))

  // the sweep's events: created, each trial started and ended, the best as it changed, ended last
  const messages = await streamed
  const events = messages.filter((m) => m.event === 'event')
  const types = events.map((m) => m.data.type)
  assert.equal(types[0], 'created')
  assert.equal(types.at(-1), 'ended')
  assert.equal(messages.at(-1)!.event, 'done')
  assert.deepEqual(messages.at(-1)!.data, { status: 'succeeded', best_model: done.best_model })
  assert.deepEqual(
    events.filter((m) => m.data.type === 'trial_started').map((m) => [m.data.data.trial, m.data.data.job_id]),
    all.map((t: { trial: number; job: { id: string } }) => [t.trial, t.job.id]),
  )
  const ends = events.filter((m) => m.data.type === 'trial_ended').map((m) => m.data.data)
  assert.equal(ends.length, 3)
  for (const e of ends) {
    assert.equal(e.status, 'succeeded')
    assert.equal(e.metric_value, finals.get(e.job_id))
  }
  const bests = events.filter((m) => m.data.type === 'best_changed').map((m) => m.data.data)
  assert.ok(bests.length >= 1)
  assert.equal(bests.at(-1).job_id, bestJob.job.id)
  assert.equal(events.at(-1)!.data.data.best_model, done.best_model)
  assert.equal(events.at(-1)!.data.data.models_pruned, 2)
  // trial ends come before the next trial's start: the third started only after an end
  assert.ok(types.indexOf('trial_ended') < types.lastIndexOf('trial_started'))
  // SSE ids increase; `sweep` messages carry the sweep as GET shows it
  const ids = events.map((m) => BigInt(m.id!))
  assert.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]!))
  assert.ok(messages.some((m) => m.event === 'sweep' && m.data.id === sweep.id))
  // resumed with Last-Event-ID: exactly the events after it
  const resumed = await readStream(`/v1/fine_tuning/sweeps/${sweep.id}/events?stream=true`, {
    ...bearer(key),
    'last-event-id': events[2]!.id!,
  })
  assert.deepEqual(
    resumed.filter((m) => m.event === 'event').map((m) => m.data.id),
    events.slice(3).map((m) => m.data.id),
  )
  // the JSON page is the same events, newest first, paged; the admin twin lists the same
  const page1 = (await get(`/v1/fine_tuning/sweeps/${sweep.id}/events?limit=2`)).json()
  assert.equal(page1.has_more, true)
  const page2 = (await get(`/v1/fine_tuning/sweeps/${sweep.id}/events?limit=100&after=${page1.data[1].id}`)).json()
  assert.deepEqual(
    [...page1.data, ...page2.data].map((e: { id: string }) => e.id),
    events.map((m) => m.data.id).reverse(),
  )
  const adminEvents = (
    await app.inject({ url: `/v1/admin/sweeps/${sweep.id}/events?limit=100`, headers: adminAuth })
  ).json()
  assert.deepEqual(adminEvents, { ...page2, data: [...page1.data, ...page2.data] })

  // the admin twins: the same sweep and trials, with the project and each trial's last and best epoch
  const admin = (url: string) => app.inject({ url, headers: adminAuth })
  const one = (await admin(`/v1/admin/sweeps/${sweep.id}`)).json()
  assert.equal(one.project.id, projectId)
  assert.deepEqual({ ...one, project: undefined }, { ...done, project: undefined })
  const byProject = (await admin(`/v1/admin/sweeps?project=${projectId}&status=succeeded`)).json()
  assert.ok(byProject.data.some((s: { id: string }) => s.id === sweep.id))
  for (const [q, present] of [
    ['status=running', false],
    ['project=proj-none', false],
  ] as const)
    assert.equal(
      (await admin(`/v1/admin/sweeps?${q}`)).json().data.some((s: { id: string }) => s.id === sweep.id),
      present,
      q,
    )
  const adminTrials = (await admin(`/v1/admin/sweeps/${sweep.id}/trials`)).json().data
  assert.equal(adminTrials.length, 3)
  for (const t of adminTrials) {
    const own = all.find((o: { job: { id: string } }) => o.job.id === t.job.id)
    assert.equal(t.metric_value, own.metric_value)
    assert.deepEqual(t.values, own.values)
    assert.equal(t.job.fine_tuned_model, t.job.id === bestJob.job.id ? own.job.fine_tuned_model : null)
    assert.equal(t.metrics.final.epoch, 2)
    assert.equal(t.metrics.final.val_accuracy, finals.get(t.job.id))
    assert.equal(typeof t.metrics.best.epoch, 'number')
  }
  assert.equal((await admin('/v1/admin/sweeps/sweep-none')).statusCode, 404)
  assert.equal((await get('/v1/admin/sweeps')).statusCode, 403) // a project key is no admin
})

test('cancel ends the unfinished trials and no trial starts after it; the values follow the seeded plan', async () => {
  const body = {
    ...base(),
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 30, batch_size: 8 } } },
    search_space: { 'hyperparameters.learning_rate': { min: 0.001, max: 0.1, scale: 'log' } },
    strategy: 'random',
    max_trials: 5,
    max_parallel: 2,
  }
  const res = await post(body)
  assert.equal(res.statusCode, 200, res.body)
  const id = res.json().id
  await waitFor(async () => (await app.db.fineTuningJob.count({ where: { sweepId: id } })) === 2, 30_000, 'two trials')
  // through the admin twin (the dashboard's), which cancels as the project's own route does
  const cancelled = await app.inject({ method: 'POST', url: `/v1/admin/sweeps/${id}/cancel`, headers: adminAuth })
  assert.equal(cancelled.statusCode, 200, cancelled.body)
  assert.equal(cancelled.json().status, 'cancelled')
  assert.equal(cancelled.json().project.id, projectId)
  const trials = await waitFor(
    async () => {
      const t = await app.db.fineTuningJob.findMany({ where: { sweepId: id }, orderBy: { sweepTrial: 'asc' } })
      return t.every((j) => ['succeeded', 'failed', 'cancelled'].includes(j.status)) && t
    },
    60_000,
    'the trials to end',
  )
  assert.ok(
    trials.some((t) => t.status === 'cancelled'),
    JSON.stringify(trials.map((t) => t.status)),
  )
  // a few reconcile passes later still no new trial, and the sweep stays cancelled
  await new Promise((r) => setTimeout(r, 1500))
  assert.equal(await app.db.fineTuningJob.count({ where: { sweepId: id } }), trials.length)
  assert.ok(trials.length <= 3)
  const after = (await get(`/v1/fine_tuning/sweeps/${id}`)).json()
  assert.equal(after.status, 'cancelled')
  // a random sweep's first trial is the baseline: the default learning rate (0.001) lies inside the range
  const plan = planTrials(body as unknown as CreateSweepBody, 11, { 'hyperparameters.learning_rate': 0.001 })
  assert.equal(after.baseline_trial, true)
  assert.deepEqual(after.baseline, { trial: 0, values: plan[0] })
  assert.deepEqual(
    trials.map((t) => t.sweepValues),
    plan.slice(0, trials.length),
  )
  const again = await app.inject({ method: 'POST', url: `/v1/fine_tuning/sweeps/${id}/cancel`, headers: bearer(key) })
  assert.equal(again.statusCode, 409)
  assert.equal(again.json().error.code, 'sweep_not_cancellable')
  // once its trials have ended it settles: each trial's end, then `ended` (cancelled), and the stream closes
  const messages = await readStream(`/v1/fine_tuning/sweeps/${id}/events?stream=true`, bearer(key))
  const events = messages.filter((m) => m.event === 'event').map((m) => m.data)
  assert.equal(events.filter((e) => e.type === 'trial_ended').length, trials.length)
  assert.equal(events.at(-1).type, 'ended')
  assert.equal(events.at(-1).data.status, 'cancelled')
  assert.deepEqual(messages.at(-1), { event: 'done', data: { status: 'cancelled', best_model: null } })
})

test('a cancelled sweep prunes too: once its trials have ended, only the best succeeded trial keeps its model', async () => {
  const res = await post({
    ...base(),
    method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 8 } } },
    // two short trials succeed; the third (200 epochs) is still running when the sweep is cancelled
    search_space: { 'hyperparameters.n_epochs': { values: [1, 2, 200] } },
    strategy: 'grid',
    max_trials: 3,
    max_parallel: 3,
  })
  assert.equal(res.statusCode, 200, res.body)
  const id = res.json().id
  const short = await waitFor(
    async () => {
      const t = await app.db.fineTuningJob.findMany({ where: { sweepId: id }, orderBy: { sweepTrial: 'asc' } })
      return t.length === 3 && t[0]!.status === 'succeeded' && t[1]!.status === 'succeeded' && t
    },
    60_000,
    'the two short trials',
  )
  assert.ok(!['succeeded', 'failed', 'cancelled'].includes(short[2]!.status), short[2]!.status)
  const cancelled = await app.inject({
    method: 'POST',
    url: `/v1/fine_tuning/sweeps/${id}/cancel`,
    headers: bearer(key),
  })
  assert.equal(cancelled.statusCode, 200, cancelled.body)
  const messages = await readStream(`/v1/fine_tuning/sweeps/${id}/events?stream=true`, bearer(key))
  const ended = messages.filter((m) => m.event === 'event').at(-1)!.data
  assert.equal(ended.type, 'ended')
  assert.equal(ended.data.status, 'cancelled')
  assert.equal(ended.data.models_pruned, 1)
  const sweep = (await get(`/v1/fine_tuning/sweeps/${id}`)).json()
  assert.equal(sweep.status, 'cancelled')
  const trials = await app.db.fineTuningJob.findMany({ where: { sweepId: id }, orderBy: { sweepTrial: 'asc' } })
  assert.equal(trials[2]!.status, 'cancelled')
  // the better of the two succeeded trials keeps its model (and is the sweep's best); the other's is gone
  const values = await Promise.all(
    trials.slice(0, 2).map(async (t) => {
      const rows = (await get(`/v1/fine_tuning/jobs/${t.id}/metrics?name=val_accuracy`)).json().data
      return rows.sort((a: { step: number }, b: { step: number }) => a.step - b.step).at(-1).value as number
    }),
  )
  const winner = values[1]! > values[0]! ? 1 : 0
  assert.equal(sweep.best_trial.job_id, trials[winner]!.id)
  assert.equal(sweep.best_model, trials[winner]!.fineTunedModelId)
  assert.ok(trials[winner]!.fineTunedModelId)
  assert.equal(trials[1 - winner]!.fineTunedModelId, null)
  const models = await app.db.model.findMany({ where: { jobId: { in: trials.map((t) => t.id) } } })
  assert.equal(models.filter((m) => !m.deletedAt).length, 1)
})

test("trials count toward the project's max_concurrent_jobs and leave a slot free for its other work; the reconcile pass starts them later", async () => {
  const limits = (max: number | null) =>
    app.inject({
      method: 'PATCH',
      url: `/v1/admin/projects/${projectId}/limits`,
      headers: adminAuth,
      payload: { max_concurrent_jobs: max },
    })
  // two slots and another job: one stays free for the project's other work, so no trial starts beside it
  assert.equal((await limits(2)).statusCode, 200)
  try {
    const job = await postJob({
      model: 'mlp-small',
      training_file: fileId,
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 20, batch_size: 8 } } },
    })
    assert.equal(job.statusCode, 200, job.body)
    const res = await post({
      ...base(),
      search_space: { 'hyperparameters.learning_rate': { values: [0.01, 0.02] } },
      strategy: 'grid',
      max_trials: 2,
      max_parallel: 2,
    })
    assert.equal(res.statusCode, 200, res.body)
    const id = res.json().id
    await sweepSucceeded(id)
    const other = await app.db.fineTuningJob.findUniqueOrThrow({ where: { id: job.json().id } })
    const trials = await app.db.fineTuningJob.findMany({ where: { sweepId: id }, orderBy: { sweepTrial: 'asc' } })
    assert.equal(trials.length, 2)
    // while the other job ran, the slot beside it stayed free; then the sweep had both
    assert.ok(trials[0]!.createdAt >= other.finishedAt!, 'the first trial waited for the other job')
    assert.ok(trials[1]!.createdAt >= other.finishedAt!, 'the second trial waited for the other job')
    assert.ok(trials[1]!.createdAt < trials[0]!.finishedAt!, 'then both ran at once (no other work left)')
  } finally {
    await limits(null)
  }
})

test('ASHA with max_parallel 1: a trial below the cut-off at a rung ends early_terminated with the rung, value and cut-off', async () => {
  const res = await post({
    ...base(),
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 3, batch_size: 32 } } },
    // the second trial barely learns: at rung 1 it is below the first, the only other trial there
    search_space: { 'hyperparameters.learning_rate': { values: [0.05, 0.000001] } },
    strategy: 'grid',
    max_trials: 2,
    max_parallel: 1,
    early_termination: { type: 'asha', min_epochs: 1, reduction_factor: 2 },
  })
  assert.equal(res.statusCode, 200, res.body)
  const sweep = res.json()
  assert.deepEqual(sweep.early_termination, { type: 'asha', min_epochs: 1, reduction_factor: 2 })
  const done = await sweepSucceeded(sweep.id)
  const [first, second] = (await get(`/v1/fine_tuning/sweeps/${sweep.id}/trials`)).json().data
  assert.equal(first.job.status, 'succeeded')
  assert.equal(done.best_trial.job_id, first.job.id)
  assert.equal(second.job.status, 'cancelled')
  assert.equal(second.job.status_reason, 'early_terminated')
  assert.equal(second.job.fine_tuned_model, null)
  // the event gives the rung, the trial's value there and the cut-off (the first trial's value at rung 1)
  const rung1 = async (jobId: string) => {
    const rows = (await get(`/v1/fine_tuning/jobs/${jobId}/metrics?name=val_accuracy`)).json().data as {
      epoch: number
      value: number
    }[]
    return rows.find((r) => r.epoch === 1)!.value
  }
  const events = await jobEventsOf(second.job.id)
  const cut = events.find((e: { data: { rung?: number } | null }) => e.data?.rung !== undefined)
  assert.ok(cut, JSON.stringify(events.map((e: { message: string }) => e.message)))
  assert.equal(cut.data.rung, 1)
  assert.equal(cut.data.metric, 'val_accuracy')
  assert.equal(cut.data.value, await rung1(second.job.id))
  assert.equal(cut.data.cutoff, await rung1(first.job.id))
  assert.ok(cut.data.value < cut.data.cutoff)
  assert.equal(cut.data.trials_at_rung, 2)
  // the sweep's own log says the same
  const sweepEvents = (await get(`/v1/fine_tuning/sweeps/${sweep.id}/events?limit=100`)).json().data
  const early = sweepEvents.find((e: { type: string }) => e.type === 'early_terminated')
  assert.ok(early, JSON.stringify(sweepEvents.map((e: { type: string }) => e.type)))
  assert.deepEqual(
    [early.data.trial, early.data.job_id, early.data.rung, early.data.value, early.data.cutoff],
    [1, second.job.id, 1, cut.data.value, cut.data.cutoff],
  )
  // the first trial passed both rungs (alone at each: the best of one always goes on)
  const firstEvents = await jobEventsOf(first.job.id)
  assert.ok(!firstEvents.some((e: { data: { rung?: number } | null }) => e.data?.rung !== undefined))
})

test("a sweep's next trial runs in the process its previous trial left idle, with the data it read, and equals the same job run alone", async () => {
  const method = { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2, batch_size: 32 } } }
  const res = await post({
    ...base(),
    method,
    search_space: { 'hyperparameters.learning_rate': { values: [0.05, 0.01] } },
    strategy: 'grid',
    max_trials: 2,
    max_parallel: 1,
  })
  assert.equal(res.statusCode, 200, res.body)
  const sweep = res.json()
  await sweepSucceeded(sweep.id)
  const [first, second] = (await get(`/v1/fine_tuning/sweeps/${sweep.id}/trials`)).json().data
  const messages = (events: { message: string }[]) => JSON.stringify(events.map((e) => e.message))
  const firstEvents = await jobEventsOf(first.job.id)
  assert.ok(!firstEvents.some((e) => / reused from /.test(e.message)), messages(firstEvents))
  const events = await jobEventsOf(second.job.id)
  const reused = events.find((e) => /^Training process \d+ reused from /.test(e.message))
  assert.ok(reused, messages(events))
  assert.equal(reused.data?.previous_job, first.job.id)
  assert.equal(reused.data?.jobs_before, 1)
  // the CSV was parsed once, by the first trial
  assert.ok(
    events.some((e) => e.message.startsWith("training dataset from this process's memory")),
    messages(events),
  )

  // the same job alone, in a process of its own: the same metrics epoch by epoch
  const lone = await postJob({
    model: 'mlp-small',
    training_file: fileId,
    method: {
      type: 'supervised',
      supervised: { hyperparameters: { ...method.supervised.hyperparameters, learning_rate: 0.01 } },
    },
    seed: 11,
  })
  assert.equal(lone.statusCode, 200, lone.body)
  await waitFor(
    async () => (await get(`/v1/fine_tuning/jobs/${lone.json().id}`)).json().status === 'succeeded',
    60_000,
    'the lone job',
  )
  const loneEvents = await jobEventsOf(lone.json().id)
  assert.ok(!loneEvents.some((e) => /reused|from this process's memory/.test(e.message)), messages(loneEvents))
  const curve = async (id: string) =>
    (await get(`/v1/fine_tuning/jobs/${id}/metrics?name=val_accuracy`))
      .json()
      .data.map((m: { epoch: number; value: number }) => [m.epoch, m.value])
  assert.equal((await curve(second.job.id)).length, 2)
  assert.deepEqual(await curve(second.job.id), await curve(lone.json().id))
})

test("a random sweep's first trial runs a lone job's defaults, equals that job run alone, and is never early-terminated", async () => {
  const method = { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2, batch_size: 32 } } }
  // the lone job: the sweep's request without the search space, the same seed
  const lone = await postJob({ model: 'mlp-small', training_file: fileId, method, seed: 11 })
  assert.equal(lone.statusCode, 200, lone.body)
  const res = await post({
    ...base(),
    method,
    search_space: {
      'hyperparameters.learning_rate': { min: 0.0005, max: 0.05, scale: 'log' },
      'hyperparameters.batch_size': { values: [16, 32] },
    },
    strategy: 'random',
    max_trials: 3,
    max_parallel: 2,
    early_termination: { type: 'asha', min_epochs: 1, reduction_factor: 3 },
  })
  assert.equal(res.statusCode, 200, res.body)
  const sweep = res.json()
  // learning_rate: the default 0.001; batch_size: the request's own 32
  const values = { 'hyperparameters.learning_rate': 0.001, 'hyperparameters.batch_size': 32 }
  assert.equal(sweep.baseline_trial, true)
  assert.deepEqual(sweep.baseline, { trial: 0, values })
  const done = await sweepSucceeded(sweep.id)
  const trials = (await get(`/v1/fine_tuning/sweeps/${sweep.id}/trials`)).json().data
  assert.deepEqual(
    trials.map((t: { baseline: boolean }) => t.baseline),
    [true, false, false],
  )
  assert.deepEqual(trials[0].values, values)
  // ASHA ranks it at the rungs but never stops it: it always completes
  assert.equal(trials[0].job.status, 'succeeded')
  // the same job as the lone one: the same settings and, seeded alike, the same metrics epoch by epoch
  const job = await waitFor(
    async () => {
      const j = (await get(`/v1/fine_tuning/jobs/${lone.json().id}`)).json()
      return j.status === 'succeeded' && j
    },
    60_000,
    'the lone job',
  )
  assert.deepEqual(trials[0].job.hyperparameters, job.hyperparameters)
  assert.deepEqual(trials[0].job.method, job.method)
  const curve = async (id: string) =>
    (await get(`/v1/fine_tuning/jobs/${id}/metrics?name=val_accuracy`))
      .json()
      .data.map((m: { epoch: number; value: number }) => [m.epoch, m.value])
  assert.deepEqual(await curve(trials[0].job.id), await curve(job.id))
  // so the sweep's best is at least the lone job's on the sweep's metric
  assert.ok(done.best_trial.metric_value >= trials[0].metric_value)
  const created = (await get(`/v1/fine_tuning/sweeps/${sweep.id}/events?limit=100`)).json().data.at(-1)
  assert.equal(created.type, 'created')
  assert.match(created.message, /trial 1 runs a lone job's defaults/)
  assert.deepEqual(created.data.baseline, values)

  // a default outside the search space: no baseline, the event says which, every trial is drawn
  const outside = await post({
    ...base(),
    method,
    search_space: { 'hyperparameters.learning_rate': { min: 0.01, max: 0.1, scale: 'log' } },
    strategy: 'random',
    max_trials: 2,
    max_parallel: 1,
  })
  assert.equal(outside.statusCode, 200, outside.body)
  assert.equal(outside.json().baseline_trial, true)
  assert.equal(outside.json().baseline, null)
  const event = (await get(`/v1/fine_tuning/sweeps/${outside.json().id}/events`)).json().data.at(-1)
  assert.equal(event.data.baseline, null)
  assert.match(event.data.baseline_reason, /hyperparameters\.learning_rate \(0\.001\) lies outside the search space/)
  assert.deepEqual(
    (await app.db.sweep.findUniqueOrThrow({ where: { id: outside.json().id } })).plan,
    planTrials(
      {
        ...base(),
        method,
        search_space: { 'hyperparameters.learning_rate': { min: 0.01, max: 0.1, scale: 'log' } },
        strategy: 'random',
        max_trials: 2,
        max_parallel: 1,
      } as unknown as CreateSweepBody,
      11,
    ),
  )
  assert.equal(
    (
      await app.inject({
        method: 'POST',
        url: `/v1/fine_tuning/sweeps/${outside.json().id}/cancel`,
        headers: bearer(key),
      })
    ).statusCode,
    200,
  )
})
