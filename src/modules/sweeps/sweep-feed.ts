// One reader per sweep per API process, shared by all of that sweep's live event streams (project and admin
// routes alike), as job streams share theirs (jobs/job-feed.ts): N streams on a sweep cost one database read
// per wake-up, not N. Wake-ups are the sweep's pings on the job-updates channel (addSweepEvent publishes the
// sweep id after each write; the process's one subscription, plugins/job-updates.ts, fans them out) and a
// safety re-read every POLL_MS per feed, as a job feed has, in case a ping was lost.
//
// The feed keeps its own cursor (the last event seq read) and hands each read to every stream, which passes
// on only what it has not sent (a stream may resume from an older Last-Event-ID than the feed's): a stream
// that joins a feed under way first catches up alone, in the feed's serialized turn, on the events the feed
// read before it came. Turns are serialized: a wake-up during a read asks for one more read after it.
import type { FastifyInstance } from 'fastify'
import type { JobUpdates } from '../../plugins/job-updates.js'
import type { FeedListener } from '../jobs/job-feed.js'
import { presentSweepEvent } from './sweep-events.js'
import { presentSweep } from './sweeps-service.js'

/** The safety re-read of a feed whose ping was lost: the same interval as a job feed's. */
const POLL_MS = 2000
const EVENT_PAGE = 500

interface ListenerState {
  lastSweepJson: string
  caughtUp: boolean
}

class SweepFeed {
  /** shared reads made so far (what tests count) */
  reads = 0
  private readonly listeners = new Map<FeedListener, ListenerState>()
  private lastSeq: bigint
  private turn: Promise<void> | null = null
  private again = false
  private readonly offPing: () => void
  private readonly poll: NodeJS.Timeout

  constructor(
    private readonly app: FastifyInstance,
    private readonly sweepId: string,
    startSeq: bigint,
    private readonly dispose: () => void,
  ) {
    // the first stream's cursor: it needs no catch-up
    this.lastSeq = startSeq
    this.offPing = app.jobUpdates.on(sweepId, () => void this.pump())
    this.poll = setInterval(() => void this.pump(), POLL_MS)
  }

  get size() {
    return this.listeners.size
  }

  /** Adds a stream and resolves once it has been sent what there is so far. */
  async subscribe(l: FeedListener): Promise<void> {
    this.listeners.set(l, { lastSweepJson: '', caughtUp: false })
    await this.pump()
  }

  unsubscribe(l: FeedListener) {
    if (!this.listeners.delete(l) || this.listeners.size) return
    clearInterval(this.poll)
    this.offPing()
    this.dispose()
  }

  private pump(): Promise<void> {
    if (this.turn) {
      this.again = true
      return this.turn
    }
    this.turn = this.rounds().finally(() => {
      this.turn = null
    })
    return this.turn
  }

  private async rounds() {
    try {
      do {
        this.again = false
        for (const [l, s] of this.listeners) if (!s.caughtUp) await this.catchUp(l, s)
        await this.read()
        if ([...this.listeners.values()].some((s) => !s.caughtUp)) this.again = true
      } while (this.again && this.listeners.size)
    } catch (err) {
      // PostgreSQL blinked: tell the clients, keep the streams; the next wake-up retries.
      for (const l of this.listeners.keys())
        l.send('error', { message: 'temporarily unable to read the sweep; retrying' })
      this.app.log.warn({ err: (err as Error).message, sweepId: this.sweepId }, 'sweep event stream read failed')
    }
  }

  /** A newcomer alone: the events the feed read before it joined. */
  private async catchUp(l: FeedListener, s: ListenerState) {
    while (l.lastSeq < this.lastSeq) {
      const events = await this.app.db.sweepEvent.findMany({
        where: { sweepId: this.sweepId, seq: { gt: l.lastSeq, lte: this.lastSeq } },
        orderBy: { seq: 'asc' },
        take: EVENT_PAGE,
      })
      if (!events.length) break
      for (const e of events) {
        l.send('event', presentSweepEvent(e), e.seq)
        l.lastSeq = e.seq
      }
    }
    s.caughtUp = true
  }

  /** The shared read, handed to every stream that has caught up. */
  private async read() {
    const { db } = this.app
    this.reads++
    // the sweep first: events written after this read are read next time, so `settled` with every event
    // up to it sent means the `ended` event has gone out
    const sweep = await db.sweep.findUnique({ where: { id: this.sweepId } })
    const events = sweep
      ? await db.sweepEvent.findMany({
          where: { sweepId: this.sweepId, seq: { gt: this.lastSeq } },
          orderBy: { seq: 'asc' },
          take: EVENT_PAGE,
        })
      : []
    if (events.length === EVENT_PAGE) this.again = true
    if (events.length) this.lastSeq = events.at(-1)!.seq
    const view = sweep && (await presentSweep(this.app, sweep))
    const json = view && JSON.stringify({ status: view.status, progress: view.progress, best_trial: view.best_trial })
    const done = sweep?.settledAt && !this.again
    for (const [l, s] of [...this.listeners]) {
      if (!s.caughtUp) continue
      if (!sweep || !view) {
        this.unsubscribe(l)
        l.close()
        continue
      }
      for (const e of events) {
        if (e.seq <= l.lastSeq) continue
        l.send('event', presentSweepEvent(e), e.seq)
        l.lastSeq = e.seq
      }
      if (json !== s.lastSweepJson) {
        s.lastSweepJson = json!
        l.send('sweep', view)
      }
      if (done) {
        l.send('done', { status: sweep.status, best_model: view.best_model })
        this.unsubscribe(l)
        l.close()
      }
    }
  }
}

/** Per API process (keyed by its job-updates hub: a route's Fastify context is not the root instance). */
const feeds = new WeakMap<JobUpdates, Map<string, SweepFeed>>()

/**
 * Follows `sweepId` for a stream whose client has seen events up to `l.lastSeq`: resolves once it has been
 * sent what there is so far. Returns the unsubscribe (call it when the stream closes; the feed has already
 * let go of a stream it closed itself).
 */
export async function followSweep(app: FastifyInstance, sweepId: string, l: FeedListener): Promise<() => void> {
  const bySweep = feeds.get(app.jobUpdates) ?? new Map<string, SweepFeed>()
  feeds.set(app.jobUpdates, bySweep)
  let feed = bySweep.get(sweepId)
  if (!feed) {
    const created: SweepFeed = new SweepFeed(
      app,
      sweepId,
      l.lastSeq,
      () => bySweep.get(sweepId) === created && bySweep.delete(sweepId),
    )
    feed = created
    bySweep.set(sweepId, feed)
  }
  const f = feed
  await f.subscribe(l)
  return () => f.unsubscribe(l)
}

/** The sweep's shared feed in this API process: how many streams follow it and how many reads it made. */
export function sweepFeedStats(app: FastifyInstance, sweepId: string): { streams: number; reads: number } | null {
  const feed = feeds.get(app.jobUpdates)?.get(sweepId)
  return feed ? { streams: feed.size, reads: feed.reads } : null
}
