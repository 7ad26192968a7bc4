// The Server-Sent Events side of a live feed (shared-feed.ts), one for job and sweep streams alike: the feed
// decides what is sent (job-feed.ts, sweeps/sweep-feed.ts), this writes it. Events carry their seq as the SSE
// id, so a client that reconnects with Last-Event-ID misses nothing and sees nothing twice. A stream holds one
// of its key's and its project's stream slots (stream-slots.ts) while open, and closes when its key is revoked
// (a Redis message; the process's one periodic check of the keys its streams use covers a lost message:
// plugins/job-updates.ts) or when the API process closes.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { FeedListener } from './shared-feed.js'
import { takeStreamSlots } from './stream-slots.js'

const HEARTBEAT_MS = 15_000

/** A feed registry's `follow` (feedRegistry in shared-feed.ts): joins a row's feed, returns the unsubscribe. */
export type FollowFeed = (app: FastifyInstance, id: string, l: FeedListener) => Promise<() => void>

/** Answers `req` with the live stream of row `id`'s feed, resumed after event seq `lastSeq`. */
export async function serveFeedStream(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  follow: FollowFeed,
  id: string,
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
    send(event, data, seq) {
      if (closed) return
      res.write(`${seq !== undefined ? `id: ${seq}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
    },
    close: () => close(),
  }

  const untrack = app.jobUpdates.track(() => close())
  // Admin streams (the dashboard's) have no key to revoke. Watching their empty key would have the process's
  // key check find no such key and close them as revoked.
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
  // what there is so far is sent before this resolves; the feed (one read per wake-up for all of the row's
  // streams in this process) carries the rest
  unfollow = await follow(app, id, listener)
  if (closed) unfollow()
}
