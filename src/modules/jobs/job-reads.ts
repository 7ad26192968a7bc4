// A job's events and metric rows as the API lists them: shared by the project routes
// (/v1/fine_tuning/jobs/{id}/…) and the admin routes (/v1/admin/jobs/{id}/…), which differ only in how
// they find the job.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Db } from '../../db/client.js'
import { unixSeconds } from '../../lib/ids.js'
import { type Page, toList } from '../../lib/pagination.js'
import { presentEvent } from './job-events.js'
import { streamJobEvents } from './job-stream.js'

const MAX_METRIC_ROWS = 10_000

/** Newest first, keyset-paginated on the event sequence (`after` = an event id). */
export async function listJobEvents(db: Db, jobId: string, page: Page) {
  const limit = page.limit ?? 20
  const cursor = page.after ? await db.jobEvent.findFirst({ where: { id: page.after, jobId } }) : null
  const rows = await db.jobEvent.findMany({
    where: { jobId, ...(cursor ? { seq: { lt: cursor.seq } } : {}) },
    orderBy: { seq: 'desc' },
    take: limit + 1,
  })
  return toList(rows, limit, presentEvent)
}

/** `?stream=true`: the live SSE stream, resumed after `Last-Event-ID`; otherwise a page of events. */
export async function serveJobEvents(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  jobId: string,
  query: Page & { stream?: boolean },
  lastEventId: string | undefined,
) {
  if (!query.stream) return listJobEvents(app.db, jobId, query)
  return streamJobEvents(app, req, reply, jobId, lastEventId ? BigInt(lastEventId) : 0n)
}

/** Metric rows in step order, optionally of one name. */
export async function listJobMetrics(db: Db, jobId: string, name: string | undefined) {
  const rows = await db.metric.findMany({
    where: { jobId, ...(name ? { name } : {}) },
    orderBy: [{ step: 'asc' }, { name: 'asc' }],
    take: MAX_METRIC_ROWS,
  })
  return {
    object: 'list' as const,
    data: rows.map((m) => ({
      object: 'fine_tuning.job.metric' as const,
      step: m.step,
      epoch: m.epoch,
      name: m.name,
      value: m.value,
      created_at: unixSeconds(m.createdAt)!,
    })),
    has_more: rows.length === MAX_METRIC_ROWS,
  }
}
