import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { serveEvents } from '../../../modules/jobs/feed-stream.js'
import { sweepEventLog } from '../../../modules/sweeps/sweep-events.js'
import {
  cancelSweep,
  createSweep,
  findSweep,
  getSweep,
  listSweeps,
  listTrials,
} from '../../../modules/sweeps/sweeps-service.js'
import { errorResponses, IdParams, ListQuery, listOf } from '../../../schemas/common.js'
import { jsonResponse, listExample, sweepExample, trialExample } from '../../../schemas/examples.js'
import { JobEventsHeaders, JobEventsQuery } from '../../../schemas/job-reads.js'
import { CreateSweepBody, SweepObject, sweepEventsResponse, TrialObject } from '../../../schemas/sweeps.js'

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/fine_tuning/sweeps',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'createFineTuningSweep',
        summary: 'Create a hyperparameter sweep: many trials (fine-tuning jobs), the best one kept',
        description:
          'Every trial is checked as a job before anything is created; the workers then run at most `max_parallel` trials at once (each one counts toward the project’s max_concurrent_jobs).',
        body: CreateSweepBody,
        response: { 200: jsonResponse(SweepObject, sweepExample, 'The sweep, `running`'), ...errorResponses(400, 404) },
      },
    },
    async (req) => createSweep(app, req.projectId, req.body),
  )

  app.get(
    '/v1/fine_tuning/sweeps',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'listFineTuningSweeps',
        summary: "List the project's sweeps, newest first",
        querystring: ListQuery,
        response: { 200: jsonResponse(listOf(SweepObject), listExample(sweepExample)), ...errorResponses(400) },
      },
    },
    async (req) => listSweeps(app, req.projectId, req.query),
  )

  app.get(
    '/v1/fine_tuning/sweeps/:id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'getFineTuningSweep',
        summary: 'Get a sweep: status, progress, the best trial so far and its model',
        params: IdParams,
        response: { 200: jsonResponse(SweepObject, sweepExample), ...errorResponses(404) },
      },
    },
    async (req) => getSweep(app, req.projectId, req.params.id),
  )

  app.get(
    '/v1/fine_tuning/sweeps/:id/trials',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'listFineTuningSweepTrials',
        summary: "A sweep's trials in plan order: each trial's job, sampled values and metric",
        params: IdParams,
        querystring: ListQuery,
        response: {
          200: jsonResponse(listOf(TrialObject), listExample(trialExample)),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => listTrials(app, req.projectId, req.params.id, req.query),
  )

  app.post(
    '/v1/fine_tuning/sweeps/:id/cancel',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'cancelFineTuningSweep',
        summary: 'Cancel a sweep: no new trial starts and every unfinished trial is cancelled like a job',
        params: IdParams,
        response: {
          200: jsonResponse(SweepObject, { ...sweepExample, status: 'cancelled' }),
          ...errorResponses(404, 409),
        },
      },
    },
    async (req) => cancelSweep(app, req.projectId, req.params.id),
  )

  app.get(
    '/v1/fine_tuning/sweeps/:id/events',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'listFineTuningSweepEvents',
        summary: "A sweep's events, newest first; with stream=true, a live Server-Sent Events stream",
        description:
          'Events: `created`, `trial_started`, `trial_ended`, `early_terminated`, `best_changed`, `ended` (always the last). The stream sends `event: event` per sweep event (SSE id = its sequence number, so `Last-Event-ID` resumes), `event: sweep` (the sweep as GET shows it) when its status, progress or best trial changes, and `event: done` after `ended`, then closes. It takes a stream slot like a job’s stream (MAX_STREAMS_PER_KEY, MAX_STREAMS_PER_PROJECT: else 429 `too_many_streams`).',
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
        (await findSweep(app, req.projectId, req.params.id)).id,
        req.query,
        req.headers['last-event-id'],
      ),
  )
}

export default routes
