// A job's live feed (issue 13, item 4): one reader per job per API process shared by all of the job's event
// streams (shared-feed.ts). Besides events it carries the per-step batch metrics, with a cursor of its own
// (the last step read): a newcomer catches up on the rows the feed read before it came, then shares its reads.
//
// What a job's stream is sent (feed-stream.ts writes it): `event` per job event in order (SSE id = its seq), `job`
// when status, progress, error or queue position change (the job as GET shows it, queue position included, so
// a client can replace its copy with it), `metrics` with the training process's batch rows (batch_loss,
// batch_accuracy) as they are written, for live per-step curves, and `done` when the job reaches a terminal
// state, which closes it.
import type { FastifyInstance } from 'fastify'
import { BATCH_METRICS } from './batch-metrics.js'
import { presentEvent } from './job-events.js'
import { presentJob, queuePosition, TERMINAL } from './jobs-service.js'
import { EVENT_PAGE, type FeedListener, feedRegistry, type ListenerState, SharedFeed } from './shared-feed.js'

export type { FeedListener } from './shared-feed.js'

const BATCH_PAGE = 2000

interface JobListenerState extends ListenerState {
  lastBatchStep: number
  lastJobJson: string
}

type BatchRow = { step: number; epoch: number; name: string; value: number }

class JobFeed extends SharedFeed<JobListenerState> {
  protected readonly what = 'job'
  private lastBatchStep = -1

  protected newState(): JobListenerState {
    return { lastBatchStep: -1, lastJobJson: '', caughtUp: false }
  }

  private eventsPage(after: bigint, upTo?: bigint) {
    return this.app.db.jobEvent.findMany({
      where: { jobId: this.id, seq: upTo === undefined ? { gt: after } : { gt: after, lte: upTo } },
      orderBy: { seq: 'asc' },
      take: EVENT_PAGE,
    })
  }

  protected async catchUp(l: FeedListener, s: JobListenerState) {
    await this.catchUpEvents(l, (after, upTo) => this.eventsPage(after, upTo), presentEvent)
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
        jobId: this.id,
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

  private sendRows(l: FeedListener, s: JobListenerState, rows: BatchRow[]) {
    const fresh = rows.filter((r) => r.step > s.lastBatchStep)
    if (!fresh.length) return
    s.lastBatchStep = fresh.at(-1)!.step
    l.send('metrics', {
      object: 'list',
      data: fresh.map((m) => ({ step: m.step, epoch: m.epoch, name: m.name, value: m.value })),
    })
  }

  protected async read() {
    const { db } = this.app
    this.reads++
    const events = await this.nextEvents((after) => this.eventsPage(after))
    const job = await db.fineTuningJob.findUnique({ where: { id: this.id } })
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
        this.end(l)
        continue
      }
      SharedFeed.sendEvents(l, events, presentEvent)
      this.sendRows(l, s, rows)
      if (json !== s.lastJobJson) {
        s.lastJobJson = json!
        l.send('job', view)
      }
      if (done) {
        l.send('done', { status: job.status, fine_tuned_model: job.fineTunedModelId })
        this.end(l)
      }
    }
  }
}

const jobFeeds = feedRegistry((app: FastifyInstance, id, startSeq, dispose) => new JobFeed(app, id, startSeq, dispose))

/**
 * Follows `jobId` for a stream whose client has seen events up to `l.lastSeq`: resolves once it has been
 * sent what there is so far. Returns the unsubscribe (call it when the stream closes).
 */
export const followJob = jobFeeds.follow

/** The job's shared feed in this API process: how many streams follow it and how many reads it made. */
export const jobFeedStats = jobFeeds.stats
