// Server-Sent Events for one sweep (`GET …/sweeps/{id}/events?stream=true` and its admin twin): `event: event`
// per sweep event (SSE id = its seq, so Last-Event-ID resumes without gaps or repeats), `event: sweep` when
// status, progress or best change (the sweep as GET shows it), and `event: done` after the `ended` event,
// which closes it. The reads are the sweep's shared feed's (sweep-feed.ts: one per sweep per API process,
// woken by the sweep's Redis pings). A stream holds the caller's stream slots like a job's
// (MAX_STREAMS_PER_KEY / _PER_PROJECT) and closes when its key is revoked (plugins/job-updates.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { FeedListener } from '../jobs/shared-feed.js'
import { takeStreamSlots } from '../jobs/stream-slots.js'
import { followSweep } from './sweep-feed.js'

const HEARTBEAT_MS = 15_000

export async function streamSweepEvents(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  sweepId: string,
  lastSeq: bigint,
) {
  // refused (429) before the answer starts
  const slots = await takeStreamSlots(app, req)
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
    lastSeq,
    send(event, data, id) {
      if (closed) return
      res.write(`${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
    },
    close: () => close(),
  }

  const untrack = app.jobUpdates.track(() => close())
  // admin streams (the dashboard's) have no key to revoke
  const offRevoked = req.apiKeyId ? app.jobUpdates.onKeyRevoked(req.apiKeyId, () => close()) : () => {}
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
  // what there is so far is sent before this resolves; the sweep's feed carries the rest
  unfollow = await followSweep(app, sweepId, listener)
  if (closed) unfollow()
}
