// A sweep's live feed: one reader per sweep per API process, shared by all of that sweep's event streams
// (project and admin routes alike), as job streams share theirs (jobs/shared-feed.ts). Wake-ups are the sweep's
// pings on the job-updates channel (addSweepEvent publishes the sweep id after each write) and the feed's
// safety re-read.
//
// What a sweep's stream is sent (jobs/feed-stream.ts writes it): `event` per sweep event (SSE id = its seq),
// `sweep` when status, progress or best trial change (the sweep as GET shows it), and `done` after the `ended`
// event, which closes it.
import type { FastifyInstance } from 'fastify'
import { EVENT_PAGE, type FeedListener, feedRegistry, type ListenerState, SharedFeed } from '../jobs/shared-feed.js'
import { presentSweepEvent } from './sweep-events.js'
import { presentSweep } from './sweeps-service.js'

interface SweepListenerState extends ListenerState {
  lastSweepJson: string
}

class SweepFeed extends SharedFeed<SweepListenerState> {
  protected readonly what = 'sweep'

  protected newState(): SweepListenerState {
    return { lastSweepJson: '', caughtUp: false }
  }

  private eventsPage(after: bigint, upTo?: bigint) {
    return this.app.db.sweepEvent.findMany({
      where: { sweepId: this.id, seq: upTo === undefined ? { gt: after } : { gt: after, lte: upTo } },
      orderBy: { seq: 'asc' },
      take: EVENT_PAGE,
    })
  }

  protected async catchUp(l: FeedListener, s: SweepListenerState) {
    await this.catchUpEvents(l, (after, upTo) => this.eventsPage(after, upTo), presentSweepEvent)
    s.caughtUp = true
  }

  protected async read() {
    const { db } = this.app
    this.reads++
    // the sweep first: events written after this read are read next time, so `settled` with every event
    // up to it sent means the `ended` event has gone out
    const sweep = await db.sweep.findUnique({ where: { id: this.id } })
    const events = sweep ? await this.nextEvents((after) => this.eventsPage(after)) : []
    const view = sweep && (await presentSweep(this.app, sweep))
    const json = view && JSON.stringify({ status: view.status, progress: view.progress, best_trial: view.best_trial })
    const done = sweep?.settledAt && !this.again
    for (const [l, s] of [...this.listeners]) {
      if (!s.caughtUp) continue
      if (!sweep || !view) {
        this.end(l)
        continue
      }
      SharedFeed.sendEvents(l, events, presentSweepEvent)
      if (json !== s.lastSweepJson) {
        s.lastSweepJson = json!
        l.send('sweep', view)
      }
      if (done) {
        l.send('done', { status: sweep.status, best_model: view.best_model })
        this.end(l)
      }
    }
  }
}

const sweepFeeds = feedRegistry(
  (app: FastifyInstance, id, startSeq, dispose) => new SweepFeed(app, id, startSeq, dispose),
)

/**
 * Follows `sweepId` for a stream whose client has seen events up to `l.lastSeq`: resolves once it has been
 * sent what there is so far. Returns the unsubscribe (call it when the stream closes).
 */
export const followSweep = sweepFeeds.follow

/** The sweep's shared feed in this API process: how many streams follow it and how many reads it made. */
export const sweepFeedStats = sweepFeeds.stats
