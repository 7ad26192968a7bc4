// What job feeds (job-feed.ts) and sweep feeds (sweeps/sweep-feed.ts) share: one reader per followed row per
// API process, however many live streams follow it, woken by the row's pings on the job-updates channel (the
// process's one subscription, plugins/job-updates.ts) and by a safety re-read every POLL_MS in case a ping was
// lost. N streams cost one database read per wake-up, not N.
//
// A feed keeps its own cursor (the last event seq read) and hands each read to every stream, which passes on
// only what it has not sent (a stream may resume from an older Last-Event-ID than the feed's). A stream that
// joins a feed under way first catches up alone, in the feed's serialized turn, on what the feed read before
// it came; then the shared reads carry it. Turns are serialized: a wake-up during a read asks for one more
// read after it, so nothing read concurrently can be sent out of order.
import type { FastifyInstance } from 'fastify'
import type { JobUpdates } from '../../plugins/job-updates.js'

/** The safety re-read of a feed whose ping was lost. */
const POLL_MS = 2000
/** Events read at once; a full page asks for another round. */
export const EVENT_PAGE = 500

/** One live stream as the feed sees it. */
export interface FeedListener {
  /** the last event seq this stream sent (its Last-Event-ID to start with) */
  lastSeq: bigint
  send(event: string, data: unknown, id?: bigint): void
  /** ends the stream (the row finished or vanished); the stream unsubscribes itself */
  close(): void
}

/** A stream's state in a feed: at least whether it has caught up with what the feed read before it came. */
export interface ListenerState {
  caughtUp: boolean
}

/** An event row as both event tables have it. */
interface EventRow {
  seq: bigint
}

export abstract class SharedFeed<S extends ListenerState> {
  /** shared reads made so far (what tests count) */
  reads = 0
  protected readonly listeners = new Map<FeedListener, S>()
  protected lastSeq: bigint
  /** the turn under way: a wake-up during it asks for one more round and waits for the turn's end */
  private turn: Promise<void> | null = null
  protected again = false
  private readonly offPing: () => void
  private readonly poll: NodeJS.Timeout

  constructor(
    protected readonly app: FastifyInstance,
    protected readonly id: string,
    startSeq: bigint,
    private readonly dispose: () => void,
  ) {
    // the first stream's cursor: it needs no catch-up, and the feed reads nothing it would not send
    this.lastSeq = startSeq
    this.offPing = app.jobUpdates.on(id, () => void this.pump())
    this.poll = setInterval(() => void this.pump(), POLL_MS)
  }

  /** "job" or "sweep": for the error a stream is sent when a read fails */
  protected abstract readonly what: string
  protected abstract newState(): S
  /** a newcomer alone: what the feed read before it joined */
  protected abstract catchUp(l: FeedListener, s: S): Promise<void>
  /** the shared read, handed to every stream that has caught up */
  protected abstract read(): Promise<void>

  get size() {
    return this.listeners.size
  }

  /** Adds a stream and resolves once it has been sent what there is so far. */
  async subscribe(l: FeedListener): Promise<void> {
    this.listeners.set(l, this.newState())
    // a turn already under way serves it in one more round
    await this.pump()
  }

  unsubscribe(l: FeedListener) {
    if (!this.listeners.delete(l) || this.listeners.size) return
    clearInterval(this.poll)
    this.offPing()
    this.dispose()
  }

  /** Ends a stream from the feed's side (its row finished or vanished). */
  protected end(l: FeedListener) {
    this.unsubscribe(l)
    l.close()
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
        l.send('error', { message: `temporarily unable to read the ${this.what}; retrying` })
      this.app.log.warn({ err: (err as Error).message, [`${this.what}Id`]: this.id }, 'event stream read failed')
    }
  }

  /** Sends a newcomer the events between its cursor and the feed's, a page at a time. */
  protected async catchUpEvents<E extends EventRow>(
    l: FeedListener,
    page: (after: bigint, upTo: bigint) => Promise<E[]>,
    present: (e: E) => unknown,
  ) {
    while (l.lastSeq < this.lastSeq) {
      const events = await page(l.lastSeq, this.lastSeq)
      if (!events.length) break
      for (const e of events) {
        l.send('event', present(e), e.seq)
        l.lastSeq = e.seq
      }
    }
  }

  /** Events after the feed's cursor (moved to the last one); a full page asks for another round. */
  protected async nextEvents<E extends EventRow>(page: (after: bigint) => Promise<E[]>): Promise<E[]> {
    const events = await page(this.lastSeq)
    if (events.length === EVENT_PAGE) this.again = true
    if (events.length) this.lastSeq = events.at(-1)!.seq
    return events
  }

  /** Sends a stream the events of a shared read it has not sent yet. */
  protected static sendEvents<E extends EventRow>(l: FeedListener, events: E[], present: (e: E) => unknown) {
    for (const e of events) {
      if (e.seq <= l.lastSeq) continue
      l.send('event', present(e), e.seq)
      l.lastSeq = e.seq
    }
  }
}

/**
 * The feeds of one kind, per API process (keyed by its job-updates hub: a route's Fastify context is not the
 * root instance): `follow` joins (or starts) a row's feed and resolves once the stream has been sent what there
 * is so far, returning the unsubscribe (the feed has already let go of a stream it closed itself); `stats` says
 * how many streams follow a row and how many reads its feed made.
 */
export function feedRegistry<F extends SharedFeed<ListenerState>>(
  create: (app: FastifyInstance, id: string, startSeq: bigint, dispose: () => void) => F,
) {
  const feeds = new WeakMap<JobUpdates, Map<string, F>>()
  return {
    async follow(app: FastifyInstance, id: string, l: FeedListener): Promise<() => void> {
      const byId = feeds.get(app.jobUpdates) ?? new Map<string, F>()
      feeds.set(app.jobUpdates, byId)
      let feed = byId.get(id)
      if (!feed) {
        const created: F = create(app, id, l.lastSeq, () => byId.get(id) === created && byId.delete(id))
        feed = created
        byId.set(id, feed)
      }
      const f = feed
      await f.subscribe(l)
      return () => f.unsubscribe(l)
    },
    stats(app: FastifyInstance, id: string): { streams: number; reads: number } | null {
      const feed = feeds.get(app.jobUpdates)?.get(id)
      return feed ? { streams: feed.size, reads: feed.reads } : null
    },
  }
}
