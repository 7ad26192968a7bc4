import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { serveEvents } from '../../../modules/jobs/feed-stream.js'
import { jobEventLog, listJobCheckpoints, listJobMetrics } from '../../../modules/jobs/job-reads.js'
import {
  cancelJob,
  createJob,
  getJob,
  listJobs,
  METADATA_QUERY_KEY,
  pauseJob,
  presentJob,
  queuePosition,
  resumeJob,
  retryJob,
} from '../../../modules/jobs/jobs-service.js'
import { errorResponses, IdParams, ListQuery, listOf } from '../../../schemas/common.js'
import {
  cancellingJobExample,
  checkpointExample,
  jobExample,
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
import { CreateJobBody } from '../../../schemas/jobs.js'
import { CheckpointObject, JobObject } from '../../../schemas/objects.js'

/** Pages, plus OpenAI's metadata filter: `metadata[k]=v` keeps jobs whose metadata has k = v (all pairs given). */
const JobListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
    after: Type.Optional(Type.String({ maxLength: 200, description: 'Id of the last object of the previous page.' })),
  },
  {
    additionalProperties: false,
    patternProperties: { [METADATA_QUERY_KEY.source]: Type.String({ maxLength: 512 }) },
    description: '`metadata[<key>]=<value>` (repeatable) keeps only jobs whose metadata holds every pair given.',
  },
)

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/fine_tuning/jobs',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'createFineTuningJob',
        summary: 'Create a fine-tuning job',
        body: CreateJobBody,
        response: {
          200: jsonResponse(Type.Ref('FineTuningJob'), queuedJobExample, 'The job, `queued` (or `validating_files`)'),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => presentJob(await createJob(app, req.projectId, req.body)),
  )

  app.get(
    '/v1/fine_tuning/jobs',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'listFineTuningJobs',
        summary: "List the project's jobs, newest first",
        querystring: JobListQuery,
        response: { 200: jsonResponse(listOf(JobObject), listExample(jobExample)), ...errorResponses(400) },
      },
    },
    async (req) => listJobs(app, req.projectId, req.query),
  )

  app.get(
    '/v1/fine_tuning/jobs/:id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'getFineTuningJob',
        summary: 'Get a job: status, progress, backend, resolved hyperparameters',
        params: IdParams,
        response: { 200: jsonResponse(Type.Ref('FineTuningJob'), jobExample), ...errorResponses(404) },
      },
    },
    async (req) => {
      const job = await getJob(app.db, req.projectId, req.params.id)
      return presentJob(job, { queuePosition: await queuePosition(app.db, job) })
    },
  )

  app.post(
    '/v1/fine_tuning/jobs/:id/retry',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'retryFineTuningJob',
        summary: 'Retry a failed or cancelled job as a new job (same model, files, method and seed)',
        description:
          'To continue from a checkpoint instead, create a job whose `model` is the checkpoint id (`ftckpt-…`).',
        params: IdParams,
        response: {
          200: jsonResponse(Type.Ref('FineTuningJob'), {
            ...queuedJobExample,
            retry_of_job_id: 'ftjob-1q2w3e4r5t6y7u8i9o0p1a2s',
          }),
          ...errorResponses(404, 409),
        },
      },
    },
    async (req) => presentJob(await retryJob(app, req.projectId, req.params.id)),
  )

  app.post(
    '/v1/fine_tuning/jobs/:id/cancel',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'cancelFineTuningJob',
        summary: 'Cancel a job: a queued job leaves the queue, a running one stops at the end of its current batch',
        params: IdParams,
        response: {
          200: jsonResponse(
            Type.Ref('FineTuningJob'),
            cancellingJobExample,
            'The job: `cancelled` if it was queued, else `cancelling`',
          ),
          ...errorResponses(404, 409),
        },
      },
    },
    async (req) => presentJob(await cancelJob(app, req.projectId, req.params.id)),
  )

  app.post(
    '/v1/fine_tuning/jobs/:id/pause',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'pauseFineTuningJob',
        summary:
          'Pause a job: a waiting job is paused at once; a running one checkpoints mid-epoch at the end of its batch, then is paused',
        description:
          'A running job stays `running` with `status_reason` "pausing" until its checkpoint (weights, optimizer and generator state, position in the epoch) is written; it then becomes `paused`. A paused job keeps its slot (counts toward `max_concurrent_jobs`). No webhook is sent for `paused`. 409 `job_not_pausable` for finished or cancelling jobs.',
        params: IdParams,
        response: {
          200: jsonResponse(
            Type.Ref('FineTuningJob'),
            pausedJobExample,
            'The job: `paused` if it had not started, else `running` with status_reason "pausing"',
          ),
          ...errorResponses(404, 409),
        },
      },
    },
    async (req) => presentJob(await pauseJob(app, req.projectId, req.params.id)),
  )

  app.post(
    '/v1/fine_tuning/jobs/:id/resume',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'resumeFineTuningJob',
        summary: 'Resume a paused job: queued again, it continues from its last checkpoint with the same batch order',
        description:
          'A seeded job paused and resumed ends with the metrics of an uninterrupted one. 409 `job_not_paused` when the job is not paused.',
        params: IdParams,
        response: {
          200: jsonResponse(Type.Ref('FineTuningJob'), queuedJobExample, 'The job, `queued`'),
          ...errorResponses(404, 409),
        },
      },
    },
    async (req) => presentJob(await resumeJob(app, req.projectId, req.params.id)),
  )

  app.get(
    '/v1/fine_tuning/jobs/:id/events',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'listFineTuningEvents',
        summary: "A job's events, newest first; with stream=true, a live Server-Sent Events stream",
        description:
          'With `stream=true` the answer is `text/event-stream`: `event: event` for each job event in order (SSE `id` = its sequence number; reconnect with `Last-Event-ID` to resume without gaps or repeats), `event: job` whenever status or progress changes, and `event: done` when the job ends. Any API process can serve it.',
        params: IdParams,
        querystring: JobEventsQuery,
        headers: JobEventsHeaders,
        response: { 200: jobEventsResponse, ...errorResponses(400, 404, 429) },
      },
    },
    async (req, reply) =>
      serveEvents(
        app,
        req,
        reply,
        jobEventLog,
        (await getJob(app.db, req.projectId, req.params.id)).id,
        req.query,
        req.headers['last-event-id'],
      ),
  )

  app.get(
    '/v1/fine_tuning/jobs/:id/checkpoints',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'listFineTuningCheckpoints',
        summary: "A job's checkpoints (one per epoch), newest first",
        description:
          '`fine_tuned_model_checkpoint` (`ft:<base>:<suffix|refit>:<short id>:ckpt-step-<N>`) and `id` (`ftckpt-…`) are both accepted as `model` when creating a job, to start from that checkpoint.',
        params: IdParams,
        querystring: ListQuery,
        response: {
          200: jsonResponse(listOf(CheckpointObject), listExample(checkpointExample)),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => listJobCheckpoints(app.db, await getJob(app.db, req.projectId, req.params.id), req.query),
  )

  app.get(
    '/v1/fine_tuning/jobs/:id/metrics',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'listFineTuningMetrics',
        summary: "A job's metric rows (loss, accuracy, val_loss, val_accuracy per epoch), in step order",
        params: IdParams,
        querystring: JobMetricsQuery,
        response: { 200: jobMetricsResponse, ...errorResponses(400, 404) },
      },
    },
    async (req) => listJobMetrics(app.db, (await getJob(app.db, req.projectId, req.params.id)).id, req.query),
  )
}

export default routes
