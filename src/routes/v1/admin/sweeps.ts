// Sweeps across every project, for operators and the dashboard's sweep page. Reads and cancel reuse the
// project routes' service with the sweep's own project, so what is shown and what cancel does are the same.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import type { Sweep } from '../../../generated/prisma/client.js'
import { serveEvents } from '../../../modules/jobs/feed-stream.js'
import { sweepEventLog } from '../../../modules/sweeps/sweep-events.js'
import type { SweepSpec } from '../../../modules/sweeps/sweep-scheduler.js'
import {
  cancelSweep,
  findSweep,
  pageSweeps,
  pageTrials,
  presentSweep,
  presentTrial,
} from '../../../modules/sweeps/sweeps-service.js'
import { errorResponses, IdParams, ListQuery, listOf } from '../../../schemas/common.js'
import { jsonResponse, listExample, sweepExample, trialExample } from '../../../schemas/examples.js'
import { JobEventsHeaders, JobEventsQuery } from '../../../schemas/job-reads.js'
import { sweepEventsResponse } from '../../../schemas/sweeps.js'
import { finalAndBest } from './jobs.js'
import { AdminSweep, AdminSweepQuery, AdminTrial, adminJobExample } from './schemas.js'

const project = adminJobExample.project
const adminSweepExample = { ...sweepExample, project }
const adminTrialExample = {
  ...trialExample,
  metrics: {
    final: { step: 3, epoch: 3, loss: 0.09, accuracy: 0.974, val_loss: 0.1, val_accuracy: 0.9712 },
    best: { step: 3, epoch: 3, loss: 0.09, accuracy: 0.974, val_loss: 0.1, val_accuracy: 0.9712 },
  },
}

async function present(app: FastifyInstance, sweep: Sweep) {
  const owner = await app.db.project.findUniqueOrThrow({
    where: { id: sweep.projectId },
    select: { id: true, name: true },
  })
  return { ...(await presentSweep(app, sweep)), project: owner }
}

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/admin/sweeps',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListSweeps',
        summary: 'List sweeps of every project, newest first, with their project',
        description: 'Filters combine: `status`, `project` (proj-…). Pages with `limit` and `after`.',
        querystring: AdminSweepQuery,
        response: { 200: jsonResponse(listOf(AdminSweep), listExample(adminSweepExample)), ...errorResponses(400) },
      },
    },
    async (req) => {
      const q = req.query
      const { rows, has_more } = await pageSweeps(
        app,
        { ...(q.project ? { projectId: q.project } : {}), ...(q.status ? { status: q.status } : {}) },
        q,
      )
      const owners = new Map(
        (
          await app.db.project.findMany({
            where: { id: { in: [...new Set(rows.map((s) => s.projectId))] } },
            select: { id: true, name: true },
          })
        ).map((p) => [p.id, p]),
      )
      return {
        object: 'list' as const,
        data: await Promise.all(
          rows.map(async (s) => ({ ...(await presentSweep(app, s)), project: owners.get(s.projectId)! })),
        ),
        has_more,
      }
    },
  )

  app.get(
    '/v1/admin/sweeps/:id',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminGetSweep',
        summary: 'Get any sweep: status, progress, the best trial so far and its model, with its project',
        params: IdParams,
        response: { 200: jsonResponse(AdminSweep, adminSweepExample), ...errorResponses(404) },
      },
    },
    async (req) => present(app, await findSweep(app, null, req.params.id)),
  )

  app.get(
    '/v1/admin/sweeps/:id/trials',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListSweepTrials',
        summary: "Any sweep's trials in plan order: each trial's job, sampled values, metric and last/best epoch",
        description:
          "Each trial as the project route shows it (`job` carries status, status_reason and fine_tuned_model), plus `metrics`: the job's last and best epoch (null before its first epoch). Pages with `limit` and `after` (the last trial's job id).",
        params: IdParams,
        querystring: ListQuery,
        response: {
          200: jsonResponse(listOf(AdminTrial), listExample(adminTrialExample)),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => {
      const sweep = await findSweep(app, null, req.params.id)
      const { rows, limit, values } = await pageTrials(app, sweep, req.query)
      const page = rows.slice(0, limit)
      const metrics = await finalAndBest(
        app,
        page.map((j) => j.id),
      )
      return {
        object: 'list' as const,
        data: page.map((j) => ({
          ...presentTrial(j, values, sweep.spec as unknown as SweepSpec),
          metrics: metrics.get(j.id) ?? null,
        })),
        has_more: rows.length > limit,
      }
    },
  )

  app.get(
    '/v1/admin/sweeps/:id/events',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListSweepEvents',
        summary: "Any sweep's events, newest first; with stream=true, a live Server-Sent Events stream",
        description: 'The same list and stream as `GET /v1/fine_tuning/sweeps/{id}/events`.',
        params: IdParams,
        querystring: JobEventsQuery,
        headers: JobEventsHeaders,
        response: { 200: sweepEventsResponse, ...errorResponses(400, 404, 429) },
      },
    },
    async (req, reply) =>
      serveEvents(
        app,
        req,
        reply,
        sweepEventLog,
        (await findSweep(app, null, req.params.id)).id,
        req.query,
        req.headers['last-event-id'],
      ),
  )

  app.post(
    '/v1/admin/sweeps/:id/cancel',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminCancelSweep',
        summary: "Cancel any project's sweep (as the project's own cancel does)",
        description: 'With the dashboard session cookie, send the `x-refit-csrf` header.',
        params: IdParams,
        response: {
          200: jsonResponse(AdminSweep, { ...adminSweepExample, status: 'cancelled' }),
          ...errorResponses(404, 409),
        },
      },
    },
    async (req) => {
      const sweep = await findSweep(app, null, req.params.id)
      await cancelSweep(app, sweep.projectId, sweep.id)
      return present(app, await findSweep(app, null, sweep.id))
    },
  )
}

export default routes
