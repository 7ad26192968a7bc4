// A job's events and metric rows as the API lists them: shared by the project routes
// (/v1/fine_tuning/jobs/{id}/…) and the admin routes (/v1/admin/jobs/{id}/…), which differ only in how
// they find the job.
import type { Db } from '../../db/client.js'
import { AppError } from '../../errors.js'
import type { FineTuningJob } from '../../generated/prisma/client.js'
import { checkpointModelId, unixSeconds } from '../../lib/ids.js'
import { NEWEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
import { listEvents } from './feed-stream.js'
import { presentEvent } from './job-events.js'
import { followJob } from './job-feed.js'

export const MAX_METRIC_ROWS = 10_000

/** A job's events route (feed-stream.ts's serveEvents): a page of job_events, or job-feed.ts's live stream. */
export const jobEventLog = {
  list: (db: Db, jobId: string, page: Page) => listEvents(db.jobEvent, { jobId }, page, presentEvent),
  follow: followJob,
}

/** A metric row's id: its place in (step, name) order, which is also the page cursor. */
const metricId = (step: number, name: string) => `mtr-${step}-${name}`

function parseMetricCursor(after: string) {
  const m = /^mtr-(\d{1,9})-(.+)$/.exec(after)
  if (!m)
    throw new AppError('invalid_request', `after must be a metric row's id (mtr-<step>-<name>), got ${after}.`, {
      param: 'after',
    })
  return { step: Number(m[1]), name: m[2] }
}

/**
 * Metric rows in (step, name) order, optionally of one name, a page of `limit` after the row `after`.
 * Without `limit` one page holds up to MAX_METRIC_ROWS, so clients that read the whole history in one
 * call keep working.
 */
export async function listJobMetrics(db: Db, jobId: string, query: { name?: string; limit?: number; after?: string }) {
  const limit = Math.min(query.limit ?? MAX_METRIC_ROWS, MAX_METRIC_ROWS)
  const cursor = query.after ? parseMetricCursor(query.after) : null
  const rows = await db.metric.findMany({
    where: {
      jobId,
      ...(query.name ? { name: query.name } : {}),
      ...(cursor ? { OR: [{ step: { gt: cursor.step } }, { step: cursor.step, name: { gt: cursor.name } }] } : {}),
    },
    orderBy: [{ step: 'asc' }, { name: 'asc' }],
    take: limit + 1,
  })
  return toList(rows, limit, (m) => ({
    id: metricId(m.step, m.name),
    object: 'fine_tuning.job.metric' as const,
    step: m.step,
    epoch: m.epoch,
    name: m.name,
    value: m.value,
    created_at: unixSeconds(m.createdAt)!,
  }))
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
