// Server-Sent Events for one job: its events in order (SSE id = the event's seq, so a client that
// reconnects with Last-Event-ID misses nothing and sees nothing twice), its progress and status as they
// change, and `done` when it reaches a terminal state. Any API process can serve it: updates are read
// from PostgreSQL, woken by Redis pings and by a periodic re-read, once per job for all of its streams in
// the process (job-feed.ts). The `job` event is the job as GET shows
// it, queue position included, so a client can replace its copy with it; `metrics` events carry the
// training process's batch rows (batch_loss, batch_accuracy) as they are written, for live per-step curves.
// A stream holds one of its key's and its project's stream slots (stream-slots.ts) while open, and closes
// when its key is revoked (a Redis message; the process's one periodic check of the keys its streams use
// covers a lost message: plugins/job-updates.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { type FeedListener, followJob } from './job-feed.js'
import { takeStreamSlots } from './stream-slots.js'

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

  let closed = false
  let unfollow: (() => void) | null = null
  const listener: FeedListener = {
    lastSeq: lastEventId,
    send(event, data, id) {
      if (closed) return
      res.write(`${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
    },
    close: () => close(),
  }

  const untrack = app.jobUpdates.track(() => close())
  const offRevoked = app.jobUpdates.onKeyRevoked(keyId, () => close())
  // keeps proxies from closing an idle stream
  const heartbeat = setInterval(() => {
    if (!closed) res.write(': ping\n\n')
  }, HEARTBEAT_MS)
  function close() {
    if (closed) return
    closed = true
    unfollow?.()
    offRevoked()
    untrack()
    void slots.release()
    clearInterval(heartbeat)
    res.end()
  }
  req.raw.on('close', close)
  // what there is so far is sent before this resolves; the job's feed (one read per wake-up for all of
  // its streams in this process) carries the rest
  unfollow = await followJob(app, jobId, listener)
  if (closed) unfollow()
}
