// Jobs across every project, for operators and the dashboard. Actions reuse the project routes' services
// with the job's own project, so the rules (what can be cancelled or retried, limits) are the same.
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { notFound } from '../../../errors.js'
import { unixSeconds } from '../../../lib/ids.js'
import { NEWEST_FIRST, olderThan, toList } from '../../../lib/pagination.js'
import { presentEvent } from '../../../modules/jobs/job-events.js'
import { streamJobEvents } from '../../../modules/jobs/job-stream.js'
import { cancelJob, presentJob, queuePosition, retryJob } from '../../../modules/jobs/jobs-service.js'
import { errorResponses, IdParams, listOf } from '../../../schemas/common.js'
import {
  cancellingJobExample,
  eventExample,
  eventStreamExample,
  jsonResponse,
  listExample,
  metricsExample,
  queuedJobExample,
} from '../../../schemas/examples.js'
import { EventObject, MetricObject } from '../../../schemas/objects.js'
import { AdminJob, AdminJobQuery, adminJobExample } from './schemas.js'

const project = adminJobExample.project

async function findJob(app: FastifyInstance, id: string) {
  const job = await app.db.fineTuningJob.findUnique({ where: { id }, include: { project: true } })
  if (!job) throw notFound('fine-tuning job', id)
  return job
}

type JobWithProject = Awaited<ReturnType<typeof findJob>>

const presentAdminJob = (j: JobWithProject, extra: { queuePosition?: number | null } = {}) => ({
  ...presentJob(j, extra),
  project: { id: j.project.id, name: j.project.name },
})

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/admin/jobs',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListJobs',
        summary: 'List jobs of every project, newest first, with their project',
        description:
          'Filters combine: `status`, `project` (proj-…), `method` (transfer, supervised, distillation), `model` (base model id). Pages with `limit` and `after`.',
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
      }
      const cursor = q.after ? await app.db.fineTuningJob.findUnique({ where: { id: q.after } }) : null
      const rows = await app.db.fineTuningJob.findMany({
        where: { AND: [filters, olderThan(cursor)] },
        orderBy: NEWEST_FIRST,
        include: { project: true },
        take: limit + 1,
      })
      return toList(rows, limit, (j) => presentAdminJob(j))
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
      return presentAdminJob(job, { queuePosition: await queuePosition(app.db, job) })
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
        querystring: Type.Object(
          {
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
            after: Type.Optional(Type.String({ maxLength: 200 })),
            stream: Type.Optional(Type.Boolean({ default: false })),
          },
          { additionalProperties: false },
        ),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ pattern: '^[0-9]{1,19}$' })) }),
        response: {
          200: {
            description: 'A page of events, or (stream=true) an event stream',
            content: {
              'application/json': { schema: listOf(EventObject), example: listExample(eventExample) },
              'text/event-stream': { schema: { type: 'string' }, example: eventStreamExample },
            },
          },
          ...errorResponses(400, 404),
        },
      },
    },
    async (req, reply) => {
      const job = await findJob(app, req.params.id)
      if (req.query.stream) {
        const last = req.headers['last-event-id']
        return streamJobEvents(app, req, reply, job.id, last ? BigInt(last) : 0n)
      }
      const limit = req.query.limit ?? 20
      const cursor = req.query.after
        ? await app.db.jobEvent.findFirst({ where: { id: req.query.after, jobId: job.id } })
        : null
      const rows = await app.db.jobEvent.findMany({
        where: { jobId: job.id, ...(cursor ? { seq: { lt: cursor.seq } } : {}) },
        orderBy: { seq: 'desc' },
        take: limit + 1,
      })
      return toList(rows, limit, presentEvent)
    },
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
        querystring: Type.Object(
          { name: Type.Optional(Type.String({ maxLength: 64 })) },
          { additionalProperties: false },
        ),
        response: {
          200: jsonResponse(
            Type.Object({ object: Type.Literal('list'), data: Type.Array(MetricObject), has_more: Type.Boolean() }),
            metricsExample,
          ),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => {
      const job = await findJob(app, req.params.id)
      const rows = await app.db.metric.findMany({
        where: { jobId: job.id, ...(req.query.name ? { name: req.query.name } : {}) },
        orderBy: [{ step: 'asc' }, { name: 'asc' }],
        take: 10_000,
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
        has_more: rows.length === 10_000,
      }
    },
  )
}

export default routes
