import { type FastifyPluginAsyncTypebox, type TSchema, Type } from '@fastify/type-provider-typebox'
import { BOUNDS } from '../../../modules/jobs/hyperparameters.js'
import { listJobCheckpoints, listJobMetrics, serveJobEvents } from '../../../modules/jobs/job-reads.js'
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
import { errorResponses, IdParams, ListQuery, listOf, Nullable, StringEnum } from '../../../schemas/common.js'
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
import { CheckpointObject, JobObject } from '../../../schemas/objects.js'

const auto = <T extends TSchema>(schema: T) => Type.Union([Type.Literal('auto'), schema])

const Hyperparameters = Type.Object(
  {
    n_epochs: Type.Optional(auto(Type.Integer({ minimum: BOUNDS.n_epochs.min, maximum: BOUNDS.n_epochs.max }))),
    batch_size: Type.Optional(auto(Type.Integer({ minimum: BOUNDS.batch_size.min, maximum: BOUNDS.batch_size.max }))),
    learning_rate: Type.Optional(
      auto(Type.Number({ exclusiveMinimum: 0, minimum: BOUNDS.learning_rate.min, maximum: BOUNDS.learning_rate.max })),
    ),
    learning_rate_multiplier: Type.Optional(
      auto(
        Type.Number({
          minimum: BOUNDS.learning_rate_multiplier.min,
          maximum: BOUNDS.learning_rate_multiplier.max,
          description: "OpenAI's form: learning_rate = 0.001 × this. Give it or learning_rate, not both.",
        }),
      ),
    ),
    validation_split: Type.Optional(
      auto(Type.Number({ minimum: BOUNDS.validation_split.min, maximum: BOUNDS.validation_split.max })),
    ),
    optimizer: Type.Optional(auto(StringEnum(['adam', 'sgd', 'rmsprop']))),
    early_stopping: Type.Optional(
      Type.Union([
        Type.Null(),
        Type.Object(
          {
            patience: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
            min_delta: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
            monitor: Type.Optional(StringEnum(['val_loss', 'val_accuracy'])),
          },
          { additionalProperties: false },
        ),
      ]),
    ),
  },
  {
    additionalProperties: false,
    description:
      '"auto" resolves from the training set size: n_epochs 5 (>=20k rows), 10 (>=2k) or 20; batch_size 128 (>=10k), 64 (>=1k) or 16; learning_rate 0.001 (or 0.001 × learning_rate_multiplier; the job echoes both); optimizer adam; validation_split 0.1 (0 with a validation file). early_stopping (off unless given; patience 3, min_delta 0, monitor val_loss) restores the best epoch\'s weights.',
  },
)

const Method = Type.Object(
  {
    type: Type.String({
      description:
        '"transfer", "supervised" or "distillation". Without `method`, the default is "supervised" for an architecture preset and "transfer" for every other model',
      examples: ['transfer'],
    }),
    transfer: Type.Optional(
      Type.Object(
        {
          hyperparameters: Type.Optional(Hyperparameters),
          head: Type.Optional(
            Type.Object(
              {
                hidden_units: Type.Optional(auto(Type.Integer({ minimum: 0, maximum: 4096 }))),
                dropout: Type.Optional(auto(Type.Number({ minimum: 0, maximum: 0.9 }))),
              },
              {
                additionalProperties: false,
                description: 'The new head: hidden units (0 = none; auto 128), dropout (auto 0.5)',
              },
            ),
          ),
          unfreeze_top_blocks: Type.Optional(
            Type.Integer({
              minimum: 0,
              maximum: 64,
              description: 'Top backbone blocks to fine-tune in a second phase',
            }),
          ),
          fine_tune: Type.Optional(
            Type.Union([
              Type.Null(),
              Type.Object(
                {
                  n_epochs: Type.Optional(auto(Type.Integer({ minimum: 1, maximum: 200 }))),
                  learning_rate: Type.Optional(auto(Type.Number({ exclusiveMinimum: 0, maximum: 1 }))),
                },
                {
                  additionalProperties: false,
                  description:
                    'Second phase on the unfrozen blocks (auto: 3 epochs at learning_rate / 10); BatchNorm stays in inference mode',
                },
              ),
            ]),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    supervised: Type.Optional(
      Type.Object({ hyperparameters: Type.Optional(Hyperparameters) }, { additionalProperties: false }),
    ),
    distillation: Type.Optional(
      Type.Object(
        {
          hyperparameters: Type.Optional(Hyperparameters),
          teacher_model: Type.String({
            minLength: 1,
            maxLength: 200,
            description: 'Built-in, uploaded or fine-tuned model',
          }),
          temperature: Type.Optional(auto(Type.Number({ minimum: 1, maximum: 50, description: 'auto: 4' }))),
          alpha: Type.Optional(
            auto(Type.Number({ minimum: 0, maximum: 1, description: 'weight of the soft loss; auto: 0.7' })),
          ),
        },
        {
          additionalProperties: false,
          description: 'loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(labels)',
        },
      ),
    ),
  },
  { additionalProperties: false },
)

/** The body of a job creation, shared with the admin route that creates a job for a project. */
export const CreateJobBody = Type.Object(
  {
    model: Type.String({
      minLength: 1,
      maxLength: 200,
      description:
        'What gets trained: a built-in, uploaded or fine-tuned model, an architecture preset (mlp-small, mlp-large, cnn-small, cnn-large; supervised or distillation), or a checkpoint id (ftckpt-…) to start from its weights',
    }),
    training_file: Type.String({ minLength: 1, maxLength: 100 }),
    // OpenAI's SDKs declare these nullable and send an explicit null when the caller passes None/null.
    validation_file: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 100 }))),
    method: Type.Optional(Method),
    hyperparameters: Type.Optional(Hyperparameters),
    seed: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 2147483647 }))),
    resource_class: Type.Optional(
      StringEnum(['auto', 'cpu', 'gpu'], {
        description:
          'Hardware the job runs on, in the words of WORKER_RESOURCE_CLASS: auto (a gpu worker when one is live at enqueue, else cpu), cpu or gpu (waits for a gpu worker).',
      }),
    ),
    suffix: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 40, pattern: '^[a-zA-Z0-9_-]+$' }))),
    metadata: Type.Optional(
      Nullable(
        Type.Record(Type.String(), Type.String({ maxLength: 512 }), {
          maxProperties: 16,
          propertyNames: { maxLength: 64 },
          description: 'At most 16 pairs; keys up to 64 characters, values up to 512.',
        }),
      ),
    ),
    integrations: Type.Optional(
      Nullable(
        Type.Array(Type.Unknown(), {
          description: 'Accepted for OpenAI clients: Refit has no integrations, so only `[]` or `null`.',
        }),
      ),
    ),
  },
  {
    additionalProperties: false,
    examples: [
      {
        model: 'mnist-cnn',
        training_file: 'file-0a1b2c3d4e5f6g7h8i9j0k1l',
        method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 5, batch_size: 128 } } },
        seed: 42,
        suffix: 'digits-5-9',
      },
      {
        model: 'mlp-small',
        training_file: 'file-0a1b2c3d4e5f6g7h8i9j0k1l',
        method: {
          type: 'distillation',
          distillation: {
            teacher_model: 'ft:mnist-cnn:refit:abc12345',
            temperature: 4,
            alpha: 0.7,
            hyperparameters: { n_epochs: 10 },
          },
        },
      },
      { model: 'cnn-small', training_file: 'file-0a1b2c3d4e5f6g7h8i9j0k1l', method: { type: 'supervised' } },
    ],
  },
)

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
      serveJobEvents(
        app,
        req,
        reply,
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
