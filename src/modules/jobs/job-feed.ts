// One reader per job per API process, shared by all of that job's live event streams (issue 13, item 4):
// N streams on a job cost one database read per wake-up (a Redis ping or the POLL_MS re-read), not N.
//
// The feed keeps its own cursors (last event seq, last batch-metric step) and hands each read to every
// stream, which passes on only what it has not sent (its own cursors; a stream may resume from an older
// Last-Event-ID than the feed's). A stream that joins a feed already under way first catches up alone, in
// the feed's serialized turn, on what the feed read before it came (events up to the feed's seq, batch
// rows up to its step); then the shared reads carry it. Turns are serialized: a wake-up during a read
// triggers one more read after it, so nothing read concurrently can be sent out of order.
import type { FastifyInstance } from 'fastify'
import type { JobUpdates } from '../../plugins/job-updates.js'
import { BATCH_METRICS } from './batch-metrics.js'
import { presentEvent } from './job-events.js'
import { presentJob, queuePosition, TERMINAL } from './jobs-service.js'

const POLL_MS = 2000
const EVENT_PAGE = 500
const BATCH_PAGE = 2000

/** One live stream as the feed sees it. */
export interface FeedListener {
  /** the last event seq this stream sent (its Last-Event-ID to start with) */
  lastSeq: bigint
  send(event: string, data: unknown, id?: bigint): void
  /** ends the stream (the job finished or vanished); the stream unsubscribes itself */
  close(): void
}

interface ListenerState {
  lastBatchStep: number
  lastJobJson: string
  caughtUp: boolean
}

type BatchRow = { step: number; epoch: number; name: string; value: number }

class JobFeed {
  /** shared reads made so far (what tests count) */
  reads = 0
  private readonly listeners = new Map<FeedListener, ListenerState>()
  private lastSeq: bigint
  private lastBatchStep = -1
  /** the turn under way: a wake-up during it asks for one more round and waits for the turn's end */
  private turn: Promise<void> | null = null
  private again = false
  private readonly offPing: () => void
  private readonly poll: NodeJS.Timeout

  constructor(
    private readonly app: FastifyInstance,
    private readonly jobId: string,
    startSeq: bigint,
    private readonly dispose: () => void,
  ) {
    // the first stream's cursor: it needs no catch-up, and the feed reads nothing it would not send
    this.lastSeq = startSeq
    this.offPing = app.jobUpdates.on(jobId, () => void this.pump())
    this.poll = setInterval(() => void this.pump(), POLL_MS)
  }

  get size() {
    return this.listeners.size
  }

  /** Adds a stream and resolves once it has been sent what there is so far. */
  async subscribe(l: FeedListener): Promise<void> {
    this.listeners.set(l, { lastBatchStep: -1, lastJobJson: '', caughtUp: false })
    // a turn already under way serves it in one more round
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
      // PostgreSQL blinked: tell the clients, keep the streams; the next poll retries.
      for (const l of this.listeners.keys())
        l.send('error', { message: 'temporarily unable to read the job; retrying' })
      this.app.log.warn({ err: (err as Error).message, jobId: this.jobId }, 'event stream read failed')
    }
  }

  /** A newcomer alone: the events and batch rows the feed read before it joined. */
  private async catchUp(l: FeedListener, s: ListenerState) {
    const { db } = this.app
    while (l.lastSeq < this.lastSeq) {
      const events = await db.jobEvent.findMany({
        where: { jobId: this.jobId, seq: { gt: l.lastSeq, lte: this.lastSeq } },
        orderBy: { seq: 'asc' },
        take: EVENT_PAGE,
      })
      if (!events.length) break
      for (const e of events) {
        l.send('event', presentEvent(e), e.seq)
        l.lastSeq = e.seq
      }
    }
    while (s.lastBatchStep < this.lastBatchStep) {
      const rows = await this.batchRows(s.lastBatchStep, this.lastBatchStep)
      if (!rows.length) break
      this.sendRows(l, s, rows)
    }
    s.lastBatchStep = Math.max(s.lastBatchStep, this.lastBatchStep)
    s.caughtUp = true
  }

  /** Batch rows after `after` (up to `upTo`), whole steps only: a full page may end halfway through one. */
  private async batchRows(after: number, upTo?: number): Promise<BatchRow[]> {
    let rows = await this.app.db.metric.findMany({
      where: {
        jobId: this.jobId,
        step: upTo === undefined ? { gt: after } : { gt: after, lte: upTo },
        name: { in: [...BATCH_METRICS] },
      },
      orderBy: [{ step: 'asc' }, { name: 'asc' }],
      take: BATCH_PAGE,
    })
    if (rows.length === BATCH_PAGE) {
      const cut = rows.at(-1)!.step
      rows = rows.filter((r) => r.step < cut)
      this.again = true
    }
    return rows
  }

  private sendRows(l: FeedListener, s: ListenerState, rows: BatchRow[]) {
    const fresh = rows.filter((r) => r.step > s.lastBatchStep)
    if (!fresh.length) return
    s.lastBatchStep = fresh.at(-1)!.step
    l.send('metrics', {
      object: 'list',
      data: fresh.map((m) => ({ step: m.step, epoch: m.epoch, name: m.name, value: m.value })),
    })
  }

  /** The shared read, handed to every stream that has caught up. */
  private async read() {
    const { db } = this.app
    this.reads++
    const events = await db.jobEvent.findMany({
      where: { jobId: this.jobId, seq: { gt: this.lastSeq } },
      orderBy: { seq: 'asc' },
      take: EVENT_PAGE,
    })
    if (events.length === EVENT_PAGE) this.again = true
    if (events.length) this.lastSeq = events.at(-1)!.seq
    const job = await db.fineTuningJob.findUnique({ where: { id: this.jobId } })
    // Read batch rows whatever the status: the last ones are written just before the job ends.
    const rows = job ? await this.batchRows(this.lastBatchStep) : []
    if (rows.length) this.lastBatchStep = rows.at(-1)!.step
    else if (this.lastBatchStep < 0) this.lastBatchStep = 0
    const view = job && presentJob(job, { queuePosition: await queuePosition(db, job) })
    const json =
      view &&
      JSON.stringify({
        status: view.status,
        progress: view.progress,
        error: view.error,
        queue_position: view.queue_position,
      })
    const done = job && (TERMINAL as readonly string[]).includes(job.status) && !this.again
    for (const [l, s] of [...this.listeners]) {
      if (!s.caughtUp) continue
      if (!job) {
        this.unsubscribe(l)
        l.close()
        continue
      }
      for (const e of events) {
        if (e.seq <= l.lastSeq) continue
        l.send('event', presentEvent(e), e.seq)
        l.lastSeq = e.seq
      }
      this.sendRows(l, s, rows)
      if (json !== s.lastJobJson) {
        s.lastJobJson = json!
        l.send('job', view)
      }
      if (done) {
        l.send('done', { status: job.status, fine_tuned_model: job.fineTunedModelId })
        this.unsubscribe(l)
        l.close()
      }
    }
  }
}

/** Per API process (keyed by its job-updates hub: a route's Fastify context is not the root instance). */
const feeds = new WeakMap<JobUpdates, Map<string, JobFeed>>()

/**
 * Follows `jobId` for a stream whose client has seen events up to `l.lastSeq`: resolves once it has been
 * sent what there is so far. Returns the unsubscribe (call it when the stream closes; the feed has
 * already let go of a stream it closed itself).
 */
export async function followJob(app: FastifyInstance, jobId: string, l: FeedListener): Promise<() => void> {
  const byJob = feeds.get(app.jobUpdates) ?? new Map<string, JobFeed>()
  feeds.set(app.jobUpdates, byJob)
  let feed = byJob.get(jobId)
  if (!feed) {
    const map = byJob
    const created: JobFeed = new JobFeed(app, jobId, l.lastSeq, () => map.get(jobId) === created && map.delete(jobId))
    feed = created
    byJob.set(jobId, feed)
  }
  const f = feed
  await f.subscribe(l)
  return () => f.unsubscribe(l)
}

/** The job's shared feed in this API process: how many streams follow it and how many reads it made. */
export function jobFeedStats(app: FastifyInstance, jobId: string): { streams: number; reads: number } | null {
  const feed = feeds.get(app.jobUpdates)?.get(jobId)
  return feed ? { streams: feed.size, reads: feed.reads } : null
}
