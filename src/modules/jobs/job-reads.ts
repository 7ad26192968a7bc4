// A job's events and metric rows as the API lists them: shared by the project routes
// (/v1/fine_tuning/jobs/{id}/…) and the admin routes (/v1/admin/jobs/{id}/…), which differ only in how
// they find the job.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Db } from '../../db/client.js'
import type { FineTuningJob } from '../../generated/prisma/client.js'
import { checkpointModelId, unixSeconds } from '../../lib/ids.js'
import { NEWEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
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

/** A job's checkpoints (one per epoch), newest first, keyset-paginated. */
export async function listJobCheckpoints(db: Db, job: FineTuningJob, page: Page) {
  const limit = page.limit ?? 20
  const cursor = page.after ? await db.checkpoint.findFirst({ where: { id: page.after, jobId: job.id } }) : null
  const rows = await db.checkpoint.findMany({
    where: { jobId: job.id, ...olderThan(cursor) },
    orderBy: NEWEST_FIRST,
    take: limit + 1,
  })
  return toList(rows, limit, (c) => ({
    id: c.id,
    object: 'fine_tuning.job.checkpoint' as const,
    created_at: unixSeconds(c.createdAt)!,
    fine_tuned_model_checkpoint: checkpointModelId(job.baseModelId, job.suffix, job.id, c.step),
    fine_tuning_job_id: job.id,
    step_number: c.step,
    epoch: c.epoch,
    metrics: c.metrics as Record<string, unknown>,
  }))
}
