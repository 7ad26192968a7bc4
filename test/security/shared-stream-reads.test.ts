// One database read per job shared by all of its live streams in an API process (issue 13, item 4): N
// streams on a job do not multiply its polling, and every stream still gets every event, batch row and
// the final `done`, including a stream that joins late from an older Last-Event-ID. Real HTTP streams on
// a listening API; the job row and its events are written straight to PostgreSQL (no worker needed).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { addJobEvent } from '../../src/modules/jobs/job-events.js'
import { jobFeedStats } from '../../src/modules/jobs/job-feed.js'
import { notifyJobChanged } from '../../src/modules/jobs/job-updates.js'
import { buildTestApp, createProjectKey, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { insertJobRow } from '../helpers/job-rows.js'

let env: TestEnv
let app: FastifyInstance
let base: string

before(async () => {
  env = await createTestEnv('shared_stream_reads', { MAX_STREAMS_PER_KEY: '20', MAX_STREAMS_PER_PROJECT: '20' })
  app = await buildTestApp(env.config)
  await app.listen({ port: 0, host: '127.0.0.1' })
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

interface Message {
  id?: string
  event: string
  data: any
}

/** An SSE stream read in the background until the server ends it. */
function open(key: string, jobId: string, lastEventId?: bigint) {
  const messages: Message[] = []
  const ended = (async () => {
    const res = await fetch(`${base}/v1/fine_tuning/jobs/${jobId}/events?stream=true`, {
      headers: {
        authorization: `Bearer ${key}`,
        ...(lastEventId !== undefined ? { 'last-event-id': String(lastEventId) } : {}),
      },
    })
    if (res.status !== 200) throw new Error(`stream refused: ${res.status} ${await res.text()}`)
    const decoder = new TextDecoder()
    let buffer = ''
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true })
      for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, i)
        buffer = buffer.slice(i + 2)
        const m: Message = { event: 'message', data: undefined }
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

test('N streams on one job share one read per wake-up, and each gets every event, batch row and done', async () => {
  const { projectId, key } = await createProjectKey(app, 'shared-reads')
  const jobId = await insertJobRow(app.db, projectId, 'running')
  for (let i = 0; i < 3; i++) await addJobEvent(app.db, jobId, 'info', `before ${i}`)

  const N = 6
  const streams = Array.from({ length: N }, () => open(key, jobId))
  await waitFor(
    async () => streams.every((s) => s.messages.some((m) => m.event === 'job')),
    20_000,
    'every stream to get the job',
  )
  assert.equal(jobFeedStats(app, jobId)?.streams, N, 'one feed follows the job for all of its streams')

  // Idle job, no pings: only the periodic re-read (every 2 s) runs, once for all N streams. Per-stream
  // polling would make about N reads per interval here; a slow machine only makes fewer.
  const r0 = jobFeedStats(app, jobId)!.reads
  await new Promise((r) => setTimeout(r, 7000))
  const idleReads = jobFeedStats(app, jobId)!.reads - r0
  console.log(`# shared reads in 7 s idle with ${N} streams: ${idleReads}`)
  assert.ok(idleReads >= 1 && idleReads <= 4, `reads in 7 s with ${N} streams: ${idleReads}`)

  // Events and batch rows as a worker writes them, with its pings; a stream joins midway from an older id.
  const first = await app.db.jobEvent.findMany({ where: { jobId }, orderBy: { seq: 'asc' } })
  let late: ReturnType<typeof open> | null = null
  for (let i = 0; i < 20; i++) {
    await addJobEvent(app.db, jobId, 'info', `during ${i}`)
    if (i % 4 === 0) {
      const step = i / 4 + 1
      await app.db.metric.createMany({
        data: ['batch_loss', 'batch_accuracy'].map((name) => ({ jobId, step, epoch: 1, name, value: step / 10 })),
      })
    }
    if (i % 3 === 0) notifyJobChanged(app.redis, env.config.queuePrefix, jobId)
    if (i === 10) late = open(key, jobId, first[1].seq)
    await new Promise((r) => setTimeout(r, 50))
  }
  // finished (a test shortcut: the lifecycle is not what is under test here)
  await app.db.fineTuningJob.update({ where: { id: jobId }, data: { status: 'succeeded', finishedAt: new Date() } })
  notifyJobChanged(app.redis, env.config.queuePrefix, jobId)
  await Promise.all([...streams, late!].map((s) => s.ended))
  assert.equal(jobFeedStats(app, jobId), null, 'the feed ends with its last stream')

  const seqs = (await app.db.jobEvent.findMany({ where: { jobId }, orderBy: { seq: 'asc' } })).map((e) => String(e.seq))
  assert.equal(seqs.length, 23)
  for (const [n, s] of [...streams, late!].entries()) {
    const expected = s === late ? seqs.slice(2) : seqs
    assert.deepEqual(
      s.messages.filter((m) => m.event === 'event').map((m) => m.id),
      expected,
      `stream ${n}: every event once, in order`,
    )
    const steps = s.messages
      .filter((m) => m.event === 'metrics')
      .flatMap((m) => m.data.data.filter((r: any) => r.name === 'batch_loss').map((r: any) => r.step))
    assert.deepEqual(steps, [1, 2, 3, 4, 5], `stream ${n}: every batch step once`)
    const done = s.messages.filter((m) => m.event === 'done')
    assert.equal(done.length, 1, `stream ${n}: one done`)
    assert.equal(done[0].data.status, 'succeeded')
    assert.equal(s.messages.at(-1)!.event, 'done')
  }
})
