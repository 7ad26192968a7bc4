// Server-Sent Events for one job: its events in order (SSE id = the event's seq, so a client that
// reconnects with Last-Event-ID misses nothing and sees nothing twice), its progress and status as they
// change, and `done` when it reaches a terminal state. Any API process can serve it: updates are read
// from PostgreSQL, woken by Redis pings and by a periodic re-read. The `job` event is the job as GET shows
// it, queue position included, so a client can replace its copy with it; `metrics` events carry the
// training process's batch rows (batch_loss, batch_accuracy) as they are written, for live per-step curves.
// A stream holds one of its key's and its project's stream slots (stream-slots.ts) while open, and closes
// when its key is revoked (a Redis ping; the heartbeat re-reads the key in case the ping was lost).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { BATCH_METRICS } from './batch-metrics.js'
import { presentEvent } from './job-events.js'
import { presentJob, queuePosition, TERMINAL } from './jobs-service.js'
import { takeStreamSlots } from './stream-slots.js'

const POLL_MS = 2000
const BATCH_PAGE = 2000
const HEARTBEAT_MS = 15_000

export async function streamJobEvents(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  jobId: string,
  lastEventId: bigint,
) {
  // refused (429) before the answer starts
  const slots = await takeStreamSlots(app, req)
  const keyId = req.apiKeyId
  reply.hijack()
  const res = reply.raw
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'x-request-id': String(req.id),
  })
  res.write('retry: 2000\n\n')

  let lastSeq = lastEventId
  let lastBatchStep = -1
  let lastJobJson = ''
  let closed = false
  let running = false
  let again = false

  const send = (event: string, data: unknown, id?: bigint) => {
    if (closed) return
    res.write(`${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }

  // Serialized: one read at a time, and a wake-up during a read triggers one more read after it.
  const pump = async () => {
    if (running) {
      again = true
      return
    }
    running = true
    try {
      do {
        again = false
        const events = await app.db.jobEvent.findMany({
          where: { jobId, seq: { gt: lastSeq } },
          orderBy: { seq: 'asc' },
          take: 500,
        })
        for (const e of events) {
          send('event', presentEvent(e), e.seq)
          lastSeq = e.seq
        }
        if (events.length === 500) again = true
        const job = await app.db.fineTuningJob.findUnique({ where: { id: jobId } })
        if (!job) return close()
        // Read batch rows whatever the status: the last ones are written just before the job ends.
        {
          let rows = await app.db.metric.findMany({
            where: { jobId, step: { gt: lastBatchStep }, name: { in: [...BATCH_METRICS] } },
            orderBy: [{ step: 'asc' }, { name: 'asc' }],
            take: BATCH_PAGE,
          })
          if (rows.length === BATCH_PAGE) {
            // a full page may end halfway through a step: send whole steps, read the rest next turn
            const cut = rows.at(-1)!.step
            rows = rows.filter((r) => r.step < cut)
            again = true
          }
          if (rows.length) {
            lastBatchStep = rows.at(-1)!.step
            send('metrics', {
              object: 'list',
              data: rows.map((m) => ({ step: m.step, epoch: m.epoch, name: m.name, value: m.value })),
            })
          } else if (lastBatchStep < 0) lastBatchStep = 0
        }
        const view = presentJob(job, { queuePosition: await queuePosition(app.db, job) })
        const json = JSON.stringify({
          status: view.status,
          progress: view.progress,
          error: view.error,
          queue_position: view.queue_position,
        })
        if (json !== lastJobJson) {
          lastJobJson = json
          send('job', view)
        }
        if ((TERMINAL as readonly string[]).includes(job.status) && !again) {
          send('done', { status: job.status, fine_tuned_model: job.fineTunedModelId })
          return close()
        }
      } while (again && !closed)
    } catch (err) {
      // PostgreSQL blinked: tell the client, keep the stream; the next poll retries.
      send('error', { message: 'temporarily unable to read the job; retrying' })
      app.log.warn({ err: (err as Error).message, jobId }, 'event stream read failed')
    } finally {
      running = false
    }
  }

  const off = app.jobUpdates.on(jobId, () => void pump())
  const untrack = app.jobUpdates.track(() => close())
  const offRevoked = app.jobUpdates.onKeyRevoked(keyId, () => close())
  const poll = setInterval(() => void pump(), POLL_MS)
  const heartbeat = setInterval(() => {
    if (closed) return
    res.write(': ping\n\n')
    app.db.apiKey
      .findUnique({ where: { id: keyId }, select: { revokedAt: true } })
      .then((k) => (!k || k.revokedAt) && close())
      .catch(() => {})
  }, HEARTBEAT_MS)
  function close() {
    if (closed) return
    closed = true
    off()
    offRevoked()
    untrack()
    void slots.release()
    clearInterval(poll)
    clearInterval(heartbeat)
    res.end()
  }
  req.raw.on('close', close)
  await pump()
}
