// A sweep's own event log (sweep_events): what the sweep did, in order, for `GET …/sweeps/{id}/events` and
// its live stream. Written by whoever makes the change: the API (created, and ended on a cancel that has
// nothing left to wait for) and the worker's sweep passes (sweep-scheduler.ts: trial_started, trial_ended,
// early_terminated, best_changed, ended). Each event has a key unique in its sweep (`trial_ended:3`), so a
// pass redone after a crash, or two passes racing, write it once. A write pings the sweep id on the
// job-updates channel (any id works there), which wakes the sweep's live streams in every API process.
//
// The live stream is jobs/feed-stream.ts's, fed by sweep-feed.ts (one shared reader per sweep per API process).
import type { Db } from '../../db/client.js'
import { newId } from '../../lib/ids.js'
import type { Page } from '../../lib/pagination.js'
import { listEvents } from '../jobs/feed-stream.js'
import { type EventLevel, eventPresenter } from '../jobs/job-events.js'
import { notifyJobChanged } from '../jobs/job-updates.js'
import type { JobServiceDeps } from '../jobs/jobs-service.js'
import { followSweep } from './sweep-feed.js'

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

export const presentSweepEvent = eventPresenter('fine_tuning.sweep.event')

/** A sweep's events route (feed-stream.ts's serveEvents): a page of sweep_events, or sweep-feed.ts's live stream. */
export const sweepEventLog = {
  list: (db: Db, sweepId: string, page: Page) => listEvents(db.sweepEvent, { sweepId }, page, presentSweepEvent),
  follow: followSweep,
}
