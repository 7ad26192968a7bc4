// A sweep's own event log (sweep_events): what the sweep did, in order, for `GET …/sweeps/{id}/events` and
// its live stream. Written by whoever makes the change: the API (created, and ended on a cancel that has
// nothing left to wait for) and the worker's sweep passes (sweep-scheduler.ts: trial_started, trial_ended,
// early_terminated, best_changed, ended). Each event has a key unique in its sweep (`trial_ended:3`), so a
// pass redone after a crash, or two passes racing, write it once. A write pings the sweep id on the
// job-updates channel (any id works there), which wakes the sweep's live streams in every API process.
//
// The stream (SSE): `event: event` per sweep event (SSE id = its seq, so Last-Event-ID resumes without gaps
// or repeats), `event: sweep` when status or progress changes (the sweep as GET shows it), and `event: done`
// after the `ended` event, which closes it. It holds the caller's stream slots like a job's stream
// (MAX_STREAMS_PER_KEY / _PER_PROJECT), closes when its key is revoked (plugins/job-updates.ts), and re-reads
// every POLL_MS in case a ping was lost.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Db } from '../../db/client.js'
import type { SweepEvent } from '../../generated/prisma/client.js'
import { newId, unixSeconds } from '../../lib/ids.js'
import { type Page, toList } from '../../lib/pagination.js'
import type { EventLevel } from '../jobs/job-events.js'
import { notifyJobChanged } from '../jobs/job-updates.js'
import type { JobServiceDeps } from '../jobs/jobs-service.js'
import { takeStreamSlots } from '../jobs/stream-slots.js'
import { presentSweep } from './sweeps-service.js'

export const SWEEP_EVENT_TYPES = [
  'created',
  'trial_started',
  'trial_ended',
  'early_terminated',
  'best_changed',
  'ended',
] as const
export type SweepEventType = (typeof SWEEP_EVENT_TYPES)[number]

/** Appends an event unless one with `key` exists; true when it wrote one (and pinged the streams). */
export async function addSweepEvent(
  deps: Pick<JobServiceDeps, 'db' | 'redis' | 'config'>,
  sweepId: string,
  key: string,
  type: SweepEventType,
  message: string,
  data: Record<string, unknown>,
  level: EventLevel = 'info',
): Promise<boolean> {
  const { count } = await deps.db.sweepEvent.createMany({
    data: [{ id: newId('swevent'), sweepId, key, type, level, message, data: data as object }],
    skipDuplicates: true,
  })
  if (count) notifyJobChanged(deps.redis, deps.config.queuePrefix, sweepId)
  return count > 0
}

/** The keys of the sweep's events of `type` (what a pass has already reported). */
export async function sweepEventKeys(db: Pick<Db, 'sweepEvent'>, sweepId: string, types: SweepEventType[]) {
  const rows = await db.sweepEvent.findMany({ where: { sweepId, type: { in: types } }, select: { key: true } })
  return new Set(rows.map((r) => r.key))
}

export function presentSweepEvent(e: SweepEvent) {
  return {
    id: e.id,
    object: 'fine_tuning.sweep.event' as const,
    created_at: unixSeconds(e.createdAt)!,
    level: e.level,
    type: e.type,
    message: e.message,
    data: (e.data as Record<string, unknown> | null) ?? null,
  }
}

/** Newest first, keyset-paginated on the event sequence (`after` = an event id), like a job's events. */
export async function listSweepEvents(db: Db, sweepId: string, page: Page) {
  const limit = page.limit ?? 20
  const cursor = page.after ? await db.sweepEvent.findFirst({ where: { id: page.after, sweepId } }) : null
  const rows = await db.sweepEvent.findMany({
    where: { sweepId, ...(cursor ? { seq: { lt: cursor.seq } } : {}) },
    orderBy: { seq: 'desc' },
    take: limit + 1,
  })
  return toList(rows, limit, presentSweepEvent)
}

/** `?stream=true`: the live SSE stream, resumed after `Last-Event-ID`; otherwise a page of events. */
export async function serveSweepEvents(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  sweepId: string,
  query: Page & { stream?: boolean },
  lastEventId: string | undefined,
) {
  if (!query.stream) return listSweepEvents(app.db, sweepId, query)
  return streamSweepEvents(app, req, reply, sweepId, lastEventId ? BigInt(lastEventId) : 0n)
}

const POLL_MS = 2000
const HEARTBEAT_MS = 15_000
const EVENT_PAGE = 500

async function streamSweepEvents(
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
  const send = (event: string, data: unknown, id?: bigint) => {
    if (!closed) res.write(`${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }

  let closed = false
  let lastSweepJson = ''
  let turn: Promise<void> | null = null
  let again = false
  // one read at a time, in order; a wake-up during a read asks for one more after it
  const pump = (): Promise<void> => {
    if (turn) {
      again = true
      return turn
    }
    turn = (async () => {
      try {
        do {
          again = false
          await read()
        } while (again && !closed)
      } catch (err) {
        send('error', { message: 'temporarily unable to read the sweep; retrying' })
        app.log.warn({ err: (err as Error).message, sweepId }, 'sweep event stream read failed')
      } finally {
        turn = null
      }
    })()
    return turn
  }
  async function read() {
    // the sweep first: events written after this read are read next time, so `settled` with every event
    // up to it sent means the `ended` event has gone out
    const sweep = await app.db.sweep.findUnique({ where: { id: sweepId } })
    if (!sweep) return close()
    const events = await app.db.sweepEvent.findMany({
      where: { sweepId, seq: { gt: lastSeq } },
      orderBy: { seq: 'asc' },
      take: EVENT_PAGE,
    })
    if (events.length === EVENT_PAGE) again = true
    for (const e of events) {
      send('event', presentSweepEvent(e), e.seq)
      lastSeq = e.seq
    }
    const view = await presentSweep(app, sweep)
    const json = JSON.stringify({ status: view.status, progress: view.progress, best_trial: view.best_trial })
    if (json !== lastSweepJson) {
      lastSweepJson = json
      send('sweep', view)
    }
    if (sweep.settledAt && !again) {
      send('done', { status: sweep.status, best_model: view.best_model })
      close()
    }
  }

  const untrack = app.jobUpdates.track(() => close())
  const offPing = app.jobUpdates.on(sweepId, () => void pump())
  const offRevoked = req.apiKeyId ? app.jobUpdates.onKeyRevoked(req.apiKeyId, () => close()) : () => {}
  const poll = setInterval(() => void pump(), POLL_MS)
  // keeps proxies from closing an idle stream (a revoked key closes it: the hub's message and its own check)
  const heartbeat = setInterval(() => {
    if (!closed) res.write(': ping\n\n')
  }, HEARTBEAT_MS)
  function close() {
    if (closed) return
    closed = true
    offPing()
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
