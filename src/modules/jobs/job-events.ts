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

export function presentEvent(e: JobEvent) {
  return {
    id: e.id,
    object: 'fine_tuning.job.event' as const,
    created_at: unixSeconds(e.createdAt)!,
    level: e.level,
    type: e.type,
    message: e.message,
    data: (e.data as Record<string, unknown> | null) ?? null,
  }
}
