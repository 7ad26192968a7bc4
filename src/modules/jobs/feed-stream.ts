// The Server-Sent Events side of a live feed (shared-feed.ts), one for job and sweep streams alike: the feed
// decides what is sent (job-feed.ts, sweeps/sweep-feed.ts), this writes it. Events carry their seq as the SSE
// id, so a client that reconnects with Last-Event-ID misses nothing and sees nothing twice. A stream holds one
// of its key's and its project's stream slots (stream-slots.ts) while open, and closes when its key is revoked
// (a Redis message; the process's one periodic check of the keys its streams use covers a lost message:
// plugins/job-updates.ts) or when the API process closes. Without `?stream=true` an events route answers a
// page of the same log instead (serveEvents, listEvents).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Db } from '../../db/client.js'
import { type Page, toList } from '../../lib/pagination.js'
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

/** An event table (job_events, sweep_events) as listEvents reads it; `W` is its owner column's `where`. */
interface EventTable<W, R extends { seq: bigint }> {
  findFirst(args: { where: W & { id: string } }): PromiseLike<R | null>
  findMany(args: { where: W & { seq?: { lt: bigint } }; orderBy: { seq: 'desc' }; take: number }): PromiseLike<R[]>
}

/** The owner's events, newest first, keyset-paginated on the event sequence (`after` = an event id). */
export async function listEvents<W, R extends { seq: bigint }, V>(
  table: EventTable<W, R>,
  owner: W,
  page: Page,
  present: (e: R) => V,
) {
  const limit = page.limit ?? 20
  const cursor = page.after ? await table.findFirst({ where: { ...owner, id: page.after } }) : null
  const rows = await table.findMany({
    where: { ...owner, ...(cursor ? { seq: { lt: cursor.seq } } : {}) },
    orderBy: { seq: 'desc' },
    take: limit + 1,
  })
  return toList(rows, limit, present)
}

/** What a job's and a sweep's events routes differ in: a page of the log, and the live feed. */
export interface EventLog<L> {
  list(db: Db, id: string, page: Page): Promise<L>
  follow: FollowFeed
}

/** `?stream=true`: the live SSE stream of row `id`'s log, resumed after `Last-Event-ID`; otherwise a page of it. */
export async function serveEvents<L>(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  log: EventLog<L>,
  id: string,
  query: Page & { stream?: boolean },
  lastEventId: string | undefined,
) {
  if (!query.stream) return log.list(app.db, id, query)
  return serveFeedStream(app, req, reply, log.follow, id, lastEventId ? BigInt(lastEventId) : 0n)
}
