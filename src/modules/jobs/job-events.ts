import type { Db } from '../../db/client.js'
import type { JobEvent } from '../../generated/prisma/client.js'
import { newId, unixSeconds } from '../../lib/ids.js'

export type EventLevel = 'info' | 'warn' | 'error'

/** Appends an event to a job's log. `type` is `message` for prose, `metrics` for an epoch's figures. */
export async function addJobEvent(
  db: Pick<Db, 'jobEvent'>,
  jobId: string,
  level: EventLevel,
  message: string,
  data?: Record<string, unknown>,
  type: 'message' | 'metrics' = 'message',
) {
  return db.jobEvent.create({
    data: { id: newId('ftevent'), jobId, level, type, message, data: (data ?? undefined) as object | undefined },
  })
}

/** The columns a job's and a sweep's event rows share (job_events, sweep_events). */
type EventFields = Pick<JobEvent, 'id' | 'createdAt' | 'level' | 'type' | 'message' | 'data'>

/**
 * The API's view of an event row; `object` says whose log it is in (a job's or a sweep's). Generic in the
 * row so a feed's `catchUpEvents` still infers its row type (with its `seq`) from the page it reads.
 */
export function eventPresenter<O extends string>(object: O) {
  return <R extends EventFields>(e: R) => ({
    id: e.id,
    object,
    created_at: unixSeconds(e.createdAt)!,
    level: e.level,
    type: e.type,
    message: e.message,
    data: (e.data as Record<string, unknown> | null) ?? null,
  })
}

export const presentEvent = eventPresenter('fine_tuning.job.event')
