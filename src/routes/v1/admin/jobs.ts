// Jobs across every project, for operators and the dashboard. Actions reuse the project routes' services
// with the job's own project, so the rules (what can be cancelled or retried, limits) are the same.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { notFound } from '../../../errors.js'
import { NEWEST_FIRST, olderThan, toList } from '../../../lib/pagination.js'
import { EPOCH_ROWS_ONLY } from '../../../modules/jobs/batch-metrics.js'
import { serveEvents } from '../../../modules/jobs/feed-stream.js'
import { jobEventLog, listJobMetrics } from '../../../modules/jobs/job-reads.js'
import {
  cancelJob,
  pauseJob,
  presentJob,
  queuePosition,
  resumeJob,
  retryJob,
} from '../../../modules/jobs/jobs-service.js'
import {
  type MetricRow,
  type MetricsSummary,
  summarizeMetrics,
} from '../../../modules/jobs/lifecycle/metrics-summary.js'
import { isTerminal } from '../../../modules/jobs/lifecycle/transitions.js'
import { errorResponses, IdParams, listOf } from '../../../schemas/common.js'
import {
  cancellingJobExample,
  jsonResponse,
  listExample,
  pausedJobExample,
  queuedJobExample,
} from '../../../schemas/examples.js'
import {
  JobEventsHeaders,
  JobEventsQuery,
  JobMetricsQuery,
  jobEventsResponse,
  jobMetricsResponse,
} from '../../../schemas/job-reads.js'
import { AdminJob, AdminJobQuery, adminJobExample, type JOB_SORTS } from './schemas.js'

const project = adminJobExample.project

async function findJob(app: FastifyInstance, id: string) {
  const job = await app.db.fineTuningJob.findUnique({ where: { id }, include: { project: true } })
  if (!job) throw notFound('fine-tuning job', id)
  return job
}

type JobWithProject = Awaited<ReturnType<typeof findJob>>

type FinalAndBest = Pick<MetricsSummary, 'final' | 'best'>

/**
 * The last and the best epoch of some jobs, by job id (null before a job's first epoch): a succeeded
 * job's from the summary the lifecycle stored on its model (best as early stopping restored it), any
 * other job's from its epoch rows by the same definition (metrics-summary.ts). Two queries.
 */
export async function finalAndBest(app: FastifyInstance, jobIds: string[]) {
  const out = new Map<string, FinalAndBest | null>()
  if (!jobIds.length) return out
  const [rows, models] = await Promise.all([
    app.db.metric.findMany({
      where: { jobId: { in: jobIds }, ...EPOCH_ROWS_ONLY },
      select: { jobId: true, step: true, epoch: true, name: true, value: true },
      orderBy: [{ step: 'asc' }],
    }),
    app.db.model.findMany({ where: { jobId: { in: jobIds } }, select: { jobId: true, metadata: true } }),
  ])
  const byJob = new Map<string, MetricRow[]>()
  for (const r of rows) byJob.set(r.jobId, [...(byJob.get(r.jobId) ?? []), r])
  const stored = new Map(
    models.map((m) => [m.jobId, (m.metadata as { metrics?: Partial<MetricsSummary> } | null)?.metrics]),
  )
  for (const id of jobIds) {
    const s = stored.get(id)
    const r = byJob.get(id)
    // only final and best: the admin schemas are closed (a whole summary fails the trials list's serializer)
    const m = s?.best_by ? s : r?.length ? summarizeMetrics(r) : null
    out.set(id, m ? { final: m.final ?? null, best: m.best ?? null } : null)
  }
  return out
}

/** What a job is ranked by for each `sort`; null sorts last in either order. */
const SORT_KEYS: Record<
  (typeof JOB_SORTS)[number],
  (j: JobWithProject, m: FinalAndBest | null | undefined) => unknown
> = {
  created: (j) => j.createdAt.getTime(),
  status: (j) => j.status,
  project: (j) => j.project.name,
  duration: (j) =>
    j.startedAt
      ? (j.finishedAt ?? (isTerminal(j.status) ? j.startedAt : new Date())).getTime() - j.startedAt.getTime()
      : null,
  final: (_j, m) => headline(m?.final),
  best: (_j, m) => headline(m?.best),
}
const headline = (m: Record<string, unknown> | null | undefined) =>
  (m?.val_accuracy ?? m?.accuracy ?? null) as number | null

/** Most jobs a sort other than newest-first ranks (the newest matching ones): a bound on one request's work. */
const RANKED_JOBS = 1000

/**
 * A page of jobs in another order than newest first: the newest RANKED_JOBS matching jobs ranked by `sort`
 * (ties newest first), `after` being the last job of the previous page. Metrics come from the same one
 * definition of final and best as everywhere (metrics-summary.ts).
 */
async function rankedJobs(
  app: FastifyInstance,
  where: object,
  sort: (typeof JOB_SORTS)[number],
  order: 'asc' | 'desc',
  after: string | undefined,
  limit: number,
) {
  const all = await app.db.fineTuningJob.findMany({
    where,
    orderBy: NEWEST_FIRST,
    include: { project: true },
    take: RANKED_JOBS,
  })
  const metrics = await finalAndBest(
    app,
    all.map((j) => j.id),
  )
  const key = SORT_KEYS[sort]
  const sign = order === 'asc' ? 1 : -1
  const keyed = all.map((j, newest) => ({ j, k: key(j, metrics.get(j.id)), newest }))
  keyed.sort((a, b) => {
    if (a.k === b.k) return a.newest - b.newest
    if (a.k === null) return 1
    if (b.k === null) return -1
    return ((a.k as number | string) < (b.k as number | string) ? -1 : 1) * sign
  })
  const start = after ? keyed.findIndex((x) => x.j.id === after) + 1 : 0
  return { rows: keyed.slice(start, start + limit + 1).map((x) => x.j), metrics }
}

const presentAdminJob = (
  j: JobWithProject,
  extra: { queuePosition?: number | null; metrics?: FinalAndBest | null } = {},
) => ({
  ...presentJob(j, extra),
  project: { id: j.project.id, name: j.project.name },
  metrics: extra.metrics ? { final: extra.metrics.final, best: extra.metrics.best } : null,
})

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/admin/jobs',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListJobs',
        summary: 'List jobs of every project (newest first, or ranked by `sort`), with their project',
        description:
          'Filters combine: `status`, `project` (proj-…), `method` (transfer, supervised, distillation), `model` (base model id), `q` (search in id, suffix, base and fine-tuned model). `sort` and `order` rank them (newest first by default). Pages with `limit` and `after`. Each job carries `queue_position` while queued and `metrics` (its last and best epoch).',
        querystring: AdminJobQuery,
        response: { 200: jsonResponse(listOf(AdminJob), listExample(adminJobExample)), ...errorResponses(400) },
      },
    },
    async (req) => {
      const q = req.query
      const limit = q.limit ?? 20
      const filters = {
        ...(q.status ? { status: q.status } : {}),
        ...(q.project ? { projectId: q.project } : {}),
        ...(q.model ? { baseModelId: q.model } : {}),
        ...(q.method ? { method: { path: ['type'], equals: q.method } } : {}),
        ...(q.q
          ? {
              OR: ['id', 'suffix', 'baseModelId', 'fineTunedModelId'].map((field) => ({
                [field]: { contains: q.q, mode: 'insensitive' as const },
              })),
            }
          : {}),
      }
      let rows: JobWithProject[]
      let metrics: Map<string, FinalAndBest | null>
      if ((q.sort ?? 'created') === 'created' && (q.order ?? 'desc') === 'desc') {
        const cursor = q.after ? await app.db.fineTuningJob.findUnique({ where: { id: q.after } }) : null
        rows = await app.db.fineTuningJob.findMany({
          where: { AND: [filters, olderThan(cursor)] },
          orderBy: NEWEST_FIRST,
          include: { project: true },
          take: limit + 1,
        })
        metrics = await finalAndBest(
          app,
          rows.slice(0, limit).map((j) => j.id),
        )
      } else {
        ;({ rows, metrics } = await rankedJobs(app, filters, q.sort ?? 'created', q.order ?? 'desc', q.after, limit))
      }
      const page = rows.slice(0, limit)
      // The queue is short (it is what waits for the workers): one count per queued job on the page.
      const positions = new Map(
        await Promise.all(
          page.filter((j) => j.status === 'queued').map(async (j) => [j.id, await queuePosition(app.db, j)] as const),
        ),
      )
      return toList(rows, limit, (j) =>
        presentAdminJob(j, { queuePosition: positions.get(j.id) ?? null, metrics: metrics.get(j.id) }),
      )
    },
  )

  app.get(
    '/v1/admin/jobs/:id',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminGetJob',
        summary: 'Get any job, with its project and place in the queue',
        params: IdParams,
        response: { 200: jsonResponse(AdminJob, adminJobExample), ...errorResponses(404) },
      },
    },
    async (req) => {
      const job = await findJob(app, req.params.id)
      const metrics = await finalAndBest(app, [job.id])
      return presentAdminJob(job, { queuePosition: await queuePosition(app.db, job), metrics: metrics.get(job.id) })
    },
  )

  app.post(
    '/v1/admin/jobs/:id/cancel',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminCancelJob',
        summary: "Cancel any project's job (as the project's own cancel does)",
        description: 'With the dashboard session cookie, send the `x-refit-csrf` header.',
        params: IdParams,
        response: {
          200: jsonResponse(AdminJob, { ...cancellingJobExample, project }),
          ...errorResponses(404, 409),
        },
      },
    },
    async (req) => {
      const job = await findJob(app, req.params.id)
      await cancelJob(app, job.projectId, job.id)
      return presentAdminJob(await findJob(app, job.id))
    },
  )

  app.post(
    '/v1/admin/jobs/:id/pause',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminPauseJob',
        summary: "Pause any project's job (as the project's own pause does)",
        description: 'With the dashboard session cookie, send the `x-refit-csrf` header.',
        params: IdParams,
        response: {
          200: jsonResponse(AdminJob, { ...pausedJobExample, project }),
          ...errorResponses(404, 409),
        },
      },
    },
    async (req) => {
      const job = await findJob(app, req.params.id)
      await pauseJob(app, job.projectId, job.id)
      return presentAdminJob(await findJob(app, job.id))
    },
  )

  app.post(
    '/v1/admin/jobs/:id/resume',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminResumeJob',
        summary: "Resume any project's paused job (as the project's own resume does)",
        description: 'With the dashboard session cookie, send the `x-refit-csrf` header.',
        params: IdParams,
        response: {
          200: jsonResponse(AdminJob, { ...queuedJobExample, project }),
          ...errorResponses(404, 409),
        },
      },
    },
    async (req) => {
      const job = await findJob(app, req.params.id)
      // as the transition left it, like the project route (a worker may claim it before a re-read)
      return presentAdminJob({ ...(await resumeJob(app, job.projectId, job.id)), project: job.project })
    },
  )

  app.post(
    '/v1/admin/jobs/:id/retry',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminRetryJob',
        summary: 'Retry a failed or cancelled job of any project as a new job in that project',
        description: 'With the dashboard session cookie, send the `x-refit-csrf` header.',
        params: IdParams,
        response: {
          200: jsonResponse(AdminJob, { ...queuedJobExample, project }),
          ...errorResponses(404, 409, 429),
        },
      },
    },
    async (req) => {
      const job = await findJob(app, req.params.id)
      const retried = await retryJob(app, job.projectId, job.id)
      return presentAdminJob(await findJob(app, retried.id))
    },
  )

  app.get(
    '/v1/admin/jobs/:id/events',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListJobEvents',
        summary: "Any job's events, newest first; with stream=true, a live Server-Sent Events stream",
        description:
          'The same stream as `GET /v1/fine_tuning/jobs/{id}/events?stream=true`: `event: event` per job event (SSE id = its sequence number; `type: metrics` events carry `data.epoch`, `loss`, `accuracy`, `val_loss`, `val_accuracy`), `event: job` on status or progress changes, `event: done` at the end.',
        params: IdParams,
        querystring: JobEventsQuery,
        headers: JobEventsHeaders,
        response: { 200: jobEventsResponse, ...errorResponses(400, 404) },
      },
    },
    async (req, reply) =>
      serveEvents(
        app,
        req,
        reply,
        jobEventLog,
        (await findJob(app, req.params.id)).id,
        req.query,
        req.headers['last-event-id'],
      ),
  )

  app.get(
    '/v1/admin/jobs/:id/metrics',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListJobMetrics',
        summary: "Any job's metric rows (loss, accuracy, val_loss, val_accuracy per epoch), in step order",
        params: IdParams,
        querystring: JobMetricsQuery,
        response: { 200: jobMetricsResponse, ...errorResponses(400, 404) },
      },
    },
    async (req) => listJobMetrics(app.db, (await findJob(app, req.params.id)).id, req.query),
  )
}

export default routes
