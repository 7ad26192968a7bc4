// The live stream of a job's events (Server-Sent Events) served by an API instance other than the one
// that created the job, resumed with Last-Event-ID without gaps or repeats; plus Idempotency-Key.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { startWorker, type WorkerHandle } from '../../workers/worker.js'
import { bearer, buildTestApp, createProjectKey, createTestEnv, type TestEnv } from '../helpers/env.js'
import { createTransferJob, uploadDigits, waitForTerminal } from '../helpers/jobs.js'

let env: TestEnv
let apiA: FastifyInstance
let apiB: FastifyInstance
let urlB: string
let worker: WorkerHandle
let key: string
let fileId: string
let work: string

interface SseMessage {
  id?: string
  event: string
  data: any
}

/** Reads an SSE stream until `done` (or the stream ends), parsing id/event/data blocks. */
async function readStream(url: string, headers: Record<string, string>, onMessage?: (m: SseMessage) => void) {
  const res = await fetch(url, { headers })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/)
  const messages: SseMessage[] = []
  const decoder = new TextDecoder()
  let buffer = ''
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true })
    for (let idx = buffer.indexOf('\n\n'); idx >= 0; idx = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, idx)
      buffer = buffer.slice(idx + 2)
      const m: SseMessage = { event: 'message', data: null }
      let hasData = false
      for (const line of block.split('\n')) {
        if (line.startsWith('id: ')) m.id = line.slice(4)
        else if (line.startsWith('event: ')) m.event = line.slice(7)
        else if (line.startsWith('data: ')) {
          m.data = JSON.parse(line.slice(6))
          hasData = true
        }
      }
      if (!hasData) continue
      messages.push(m)
      onMessage?.(m)
    }
  }
  return messages
}

before(async () => {
  env = await createTestEnv('events')
  apiA = await buildTestApp(env.config)
  apiB = await buildTestApp(env.config)
  urlB = await apiB.listen({ port: 0, host: '127.0.0.1' })
  worker = await startWorker(env.config)
  ;({ key } = await createProjectKey(apiA))
  work = await mkdtemp(join(tmpdir(), 'refit-events-'))
  fileId = await uploadDigits(apiA, key, work, 1500)
})

after(async () => {
  await worker?.close()
  await apiA?.close()
  await apiB?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

test('another API instance streams the job live: ordered events, progress, metrics, then done', async () => {
  const job = await createTransferJob(apiA, key, fileId, { n_epochs: 3, batch_size: 16 })
  let liveWhileRunning = 0
  const messages = await readStream(`${urlB}/v1/fine_tuning/jobs/${job.id}/events?stream=true`, bearer(key), (m) => {
    if (m.event === 'job' && m.data.status === 'running' && m.data.progress?.step > 0) liveWhileRunning++
  })
  const events = messages.filter((m) => m.event === 'event')
  const ids = events.map((m) => BigInt(m.id!))
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], 'event ids strictly increase')
  assert.ok(liveWhileRunning >= 1, 'progress arrived while the job was running')
  const metrics = events.filter((m) => m.data.type === 'metrics')
  assert.deepEqual(
    metrics.map((m) => m.data.data.epoch),
    [1, 2, 3],
    'one metrics event per epoch',
  )
  const last = messages.at(-1)!
  assert.equal(last.event, 'done')
  assert.equal(last.data.status, 'succeeded')
  // The stream carried exactly the stored events.
  const stored = await apiA.db.jobEvent.findMany({ where: { jobId: job.id }, orderBy: { seq: 'asc' } })
  assert.deepEqual(
    events.map((m) => m.data.id),
    stored.map((e) => e.id),
  )

  // Resume from the middle: only the later events come, none twice.
  const mid = events[Math.floor(events.length / 2)]
  const resumed = await readStream(`${urlB}/v1/fine_tuning/jobs/${job.id}/events?stream=true`, {
    ...bearer(key),
    'last-event-id': mid.id!,
  })
  const resumedIds = resumed.filter((m) => m.event === 'event').map((m) => m.data.id)
  assert.deepEqual(
    resumedIds,
    events.slice(events.indexOf(mid) + 1).map((m) => m.data.id),
  )
  assert.equal(resumed.at(-1)!.event, 'done')
})

test('Idempotency-Key: a repeated create returns the same job; another body with the key is refused', async () => {
  const headers = { 'idempotency-key': `create-${Date.now()}` }
  const first = await apiA.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: { ...bearer(key), ...headers },
    payload: {
      model: 'mnist-cnn',
      training_file: fileId,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 1 } } },
    },
  })
  assert.equal(first.statusCode, 200)
  const again = await apiB.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: { ...bearer(key), ...headers },
    payload: {
      model: 'mnist-cnn',
      training_file: fileId,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 1 } } },
    },
  })
  assert.equal(again.statusCode, 200)
  assert.equal(again.headers['idempotent-replayed'], 'true')
  assert.equal(again.json().id, first.json().id)
  assert.equal(
    await apiA.db.fineTuningJob.count({
      where: {
        trainingFileId: fileId,
        createdAt: { gte: new Date(Date.now() - 60_000) },
        hyperparameters: { path: ['n_epochs'], equals: 1 },
      },
    }),
    1,
  )
  const other = await apiA.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: { ...bearer(key), ...headers },
    payload: { model: 'mnist-cnn', training_file: fileId },
  })
  assert.equal(other.statusCode, 422)
  assert.equal(other.json().error.code, 'idempotency_key_reused')
  await waitForTerminal(apiA, first.json().id)
})
