// A mobilenet-v2 transfer job through real worker processes: its events say the backbone ran as a `graph`
// (compiled into the storage's graph cache), and `eager` when the worker runs with REFIT_FROZEN_GRAPH=off.
// Both jobs succeed on the same file.
import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { bearer, buildTestApp, createProjectKey, createTestEnv, type TestEnv } from '../helpers/env.js'
import { uploadDigits, waitForTerminal } from '../helpers/jobs.js'
import { startWorkerProcess } from '../helpers/worker-process.js'

let env: TestEnv
let app: FastifyInstance
let key: string
let fileId: string
let work: string

before(async () => {
  // no feature cache: the second job must compute its features again, eagerly
  env = await createTestEnv('frozen_graph', { FEATURE_CACHE_BYTES: '0' })
  app = await buildTestApp(env.config)
  ;({ key } = await createProjectKey(app))
  work = await mkdtemp(join(tmpdir(), 'refit-frozen-graph-'))
})

after(async () => {
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

/** Runs one mobilenet-v2 transfer job on a worker started with `extraEnv`; returns its event messages. */
async function runJob(extraEnv: Record<string, string>) {
  const worker = await startWorkerProcess({ ...env.env, ...extraEnv })
  try {
    // 28x28 digits, validated by the first worker: the training process loads them at 224x224x3
    fileId ??= await uploadDigits(app, key, work, 16)
    const res = await app.inject({
      method: 'POST',
      url: '/v1/fine_tuning/jobs',
      headers: bearer(key),
      payload: {
        model: 'mobilenet-v2',
        training_file: fileId,
        seed: 1,
        method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 1, batch_size: 16 } } },
      },
    })
    assert.equal(res.statusCode, 200, res.body)
    const job = await waitForTerminal(app, res.json().id, 300_000)
    assert.equal(job.status, 'succeeded', `${job.errorCode}: ${job.errorMessage}\n${worker.output().slice(-2000)}`)
    const events = await app.db.jobEvent.findMany({ where: { jobId: job.id }, orderBy: { seq: 'asc' } })
    if (process.env.DEBUG_EVENTS) for (const e of events) console.log(e.createdAt.toISOString(), e.message)
    return events
  } finally {
    await worker.kill('SIGTERM')
  }
}

test('a mobilenet-v2 job runs its backbone as a graph; with REFIT_FROZEN_GRAPH=off, eagerly', async () => {
  const graphEvents = await runJob({})
  const g = graphEvents.find((e) => e.message.startsWith('backbone forward pass:'))
  assert.ok(g, graphEvents.map((e) => e.message).join('\n'))
  assert.match(g.message, /^backbone forward pass: graph \(compiled/)
  const computed = graphEvents.find((e) => e.message.startsWith('computed backbone features'))
  assert.match(computed!.message, /\(graph\)$/)
  assert.equal((computed!.data as Record<string, unknown>).forward, 'graph')
  // compiled into the storage's graph cache, where later jobs and processes find it
  assert.equal((await readdir(join(env.config.storageDir, 'cache', 'graphs'))).length, 1)

  const eagerEvents = await runJob({ REFIT_FROZEN_GRAPH: 'off' })
  const e = eagerEvents.find((x) => x.message.startsWith('backbone forward pass:'))
  assert.equal(e?.message, 'backbone forward pass: eager (REFIT_FROZEN_GRAPH=off)')
  const data = eagerEvents.find((x) => x.message.startsWith('computed backbone features'))!.data as Record<
    string,
    unknown
  >
  assert.equal(data.forward, 'eager')
  assert.equal(data.forward_reason, 'REFIT_FROZEN_GRAPH=off')
})
