// A sweep's live event streams ride the job streams' mechanism: a sweep event written by one instance (as the
// worker's sweep passes write them) reaches the SSE streams served by another within a Redis ping, not a
// re-read interval; every stream of the sweep in a process (project and admin routes alike) shares one
// reader, so N streams make one read per wake-up; a stream joining late from an older Last-Event-ID gets
// every event once; `done` closes them all. Real HTTP streams on a listening API, real PostgreSQL and Redis;
// the sweep row and its events are written straight to PostgreSQL (no worker: the streams are under test).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { newId } from '../../src/lib/ids.js'
import { notifyJobChanged } from '../../src/modules/jobs/job-updates.js'
import { addSweepEvent } from '../../src/modules/sweeps/sweep-events.js'
import { sweepFeedStats } from '../../src/modules/sweeps/sweep-feed.js'
import {
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  type TestEnv,
  waitFor,
} from '../helpers/env.js'

let env: TestEnv
let server: FastifyInstance
let writer: FastifyInstance
let base: string

before(async () => {
  env = await createTestEnv('sweep_event_stream', { MAX_STREAMS_PER_KEY: '20', MAX_STREAMS_PER_PROJECT: '20' })
  server = await buildTestApp(env.config)
  writer = await buildTestApp(env.config)
  await server.listen({ port: 0, host: '127.0.0.1' })
  base = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`
})
after(async () => {
  await server?.close()
  await writer?.close()
  await env?.cleanup()
})

interface Message {
  id?: string
  event: string
  data: any
  at: number
}

/** An SSE stream read in the background until the server ends it; each message stamped on arrival. */
function open(path: string, headers: Record<string, string>, lastEventId?: bigint) {
  const messages: Message[] = []
  const ended = (async () => {
    const res = await fetch(`${base}${path}`, {
      headers: { ...headers, ...(lastEventId !== undefined ? { 'last-event-id': String(lastEventId) } : {}) },
    })
    if (res.status !== 200) throw new Error(`stream refused: ${res.status} ${await res.text()}`)
    const decoder = new TextDecoder()
    let buffer = ''
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true })
      for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, i)
        buffer = buffer.slice(i + 2)
        const m: Message = { event: 'message', data: undefined, at: performance.now() }
        for (const line of block.split('\n')) {
          if (line.startsWith('id: ')) m.id = line.slice(4)
          else if (line.startsWith('event: ')) m.event = line.slice(7)
          else if (line.startsWith('data: ')) m.data = JSON.parse(line.slice(6))
        }
        if (m.data !== undefined) messages.push(m)
      }
    }
  })()
  return { messages, ended }
}

const spec = {
  model: 'mnist-cnn',
  training_file: 'file-none',
  method: { type: 'transfer', transfer: {} },
  search_space: { 'hyperparameters.learning_rate': { values: [0.01, 0.001] } },
  strategy: 'grid',
  max_trials: 2,
  max_parallel: 1,
  metric: 'val_accuracy',
  goal: 'maximize',
  seed: 1,
  early_termination: null,
  keep_all_models: false,
}

test('a new sweep event reaches every stream within a ping, through one shared reader per sweep', async () => {
  const { projectId, key } = await createProjectKey(server, 'sweep-streams')
  const sweepId = newId('sweep')
  await server.db.sweep.create({
    data: {
      id: sweepId,
      projectId,
      spec,
      plan: [{ 'hyperparameters.learning_rate': 0.01 }, { 'hyperparameters.learning_rate': 0.001 }],
    },
  })
  await addSweepEvent(writer, sweepId, 'created', 'created', 'created', {})
  const createdSeq = (await server.db.sweepEvent.findFirstOrThrow({ where: { sweepId } })).seq

  // four project streams and the dashboard's (admin) twin
  const streams = [
    ...Array.from({ length: 4 }, () => open(`/v1/fine_tuning/sweeps/${sweepId}/events?stream=true`, bearer(key))),
    open(`/v1/admin/sweeps/${sweepId}/events?stream=true`, adminAuth),
  ]
  await waitFor(
    async () => streams.every((s) => s.messages.some((m) => m.event === 'sweep')),
    20_000,
    'every stream to get the sweep',
  )
  assert.equal(sweepFeedStats(server, sweepId)?.streams, 5, 'one feed follows the sweep for all of its streams')

  // Idle, no pings: only the feed's safety re-read (every 2 s) runs, once for all five streams (a read per
  // stream per interval would make about 5 per interval); a slow machine only makes fewer.
  const r0 = sweepFeedStats(server, sweepId)!.reads
  await new Promise((r) => setTimeout(r, 5000))
  const idleReads = sweepFeedStats(server, sweepId)!.reads - r0
  console.log(`# shared sweep reads in 5 s idle with 5 streams: ${idleReads}`)
  assert.ok(idleReads >= 1 && idleReads <= 3, `reads in 5 s with 5 streams: ${idleReads}`)

  // Events written by the other instance, spaced so the re-read cannot be what delivers them in time: each
  // must reach all five streams well within the 2 s re-read interval.
  const latencies: number[] = []
  let late: ReturnType<typeof open> | null = null
  for (let i = 0; i < 6; i++) {
    await new Promise((r) => setTimeout(r, 300 + 170 * i))
    const t0 = performance.now()
    await addSweepEvent(writer, sweepId, `trial_started:${i}`, 'trial_started', `Trial ${i + 1} started`, { trial: i })
    const id = (await server.db.sweepEvent.findFirstOrThrow({ where: { sweepId, key: `trial_started:${i}` } })).id
    const arrived = await waitFor(
      async () => {
        const at = streams.map((s) => s.messages.find((m) => m.event === 'event' && m.data.id === id)?.at)
        return at.every((a) => a !== undefined) && (at as number[])
      },
      10_000,
      `event ${i} on every stream`,
      5,
    )
    latencies.push(Math.max(...arrived) - t0)
    // joins midway, resuming after the first event
    if (i === 2) late = open(`/v1/fine_tuning/sweeps/${sweepId}/events?stream=true`, bearer(key), createdSeq)
  }
  const sorted = [...latencies].sort((a, b) => a - b)
  const median = sorted[Math.floor(sorted.length / 2)]!
  console.log(`# write -> all 5 streams, ms: ${latencies.map((l) => l.toFixed(0)).join(', ')}`)
  // polling alone would average ~1000 ms (uniform in 0-2000) and exceed 500 ms in 3 of 4 events
  assert.ok(median < 500, `median ${median} ms`)
  assert.ok(sorted.at(-1)! < 1500, `slowest ${sorted.at(-1)} ms`)

  // the sweep ends: `ended`, then settled (as the scheduler's finish writes them), and every stream closes
  await addSweepEvent(writer, sweepId, 'ended', 'ended', 'Sweep failed', { status: 'failed' })
  await writer.db.sweep.update({
    where: { id: sweepId },
    data: { status: 'failed', finishedAt: new Date(), settledAt: new Date() },
  })
  notifyJobChanged(writer.redis, env.config.queuePrefix, sweepId)
  await Promise.all([...streams, late!].map((s) => s.ended))
  assert.equal(sweepFeedStats(server, sweepId), null, 'the feed ends with its last stream')

  const ids = (await server.db.sweepEvent.findMany({ where: { sweepId }, orderBy: { seq: 'asc' } })).map((e) =>
    String(e.seq),
  )
  assert.equal(ids.length, 8)
  for (const [n, s] of [...streams, late!].entries()) {
    assert.deepEqual(
      s.messages.filter((m) => m.event === 'event').map((m) => m.id),
      s === late ? ids.slice(1) : ids,
      `stream ${n}: every event once, in order`,
    )
    assert.equal(s.messages.filter((m) => m.event === 'done').length, 1, `stream ${n}: one done`)
    assert.deepEqual(s.messages.at(-1)!.data, { status: 'failed', best_model: null })
  }
})
