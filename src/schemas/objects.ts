// Response schemas: allow-lists of what the API returns (never a raw database row).
import { Type } from '@fastify/type-provider-typebox'
import { JOB_FAILURE_CODES, type JobFailureCode } from '../modules/jobs/failure-codes.js'
import { AnyObject, Nullable, StringEnum } from './common.js'
import { JobHyperparameters, JobMethod, JobProgress } from './jobs.js'
import { CheckpointMetrics, MetricsSummary } from './metrics.js'

const Unix = Type.Integer({ description: 'Unix seconds' })

export const ProjectObject = Type.Object(
  {
    id: Type.String({ examples: ['proj-3k9x0c1v7b2n5m8q4w6e1r0t'] }),
    object: Type.Literal('project'),
    name: Type.String(),
    created_at: Unix,
  },
  { $id: 'Project' },
)

export const ApiKeyObject = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('api_key'),
    project_id: Type.String(),
    name: Nullable(Type.String()),
    key: Type.String({ description: 'The secret; shown only in this response.' }),
    prefix: Type.String(),
    created_at: Unix,
  },
  { $id: 'ApiKey' },
)

const FileError = Type.Object({
  code: Type.String(),
  message: Type.String(),
  details: Type.Optional(
    Type.Array(
      Type.Object({
        line: Type.Optional(Type.Integer()),
        entry: Type.Optional(Type.String()),
        field: Type.Optional(Type.String()),
        message: Type.String(),
      }),
    ),
  ),
})

export const FileObject = Type.Object(
  {
    id: Type.String({ examples: ['file-0a1b2c3d4e5f6g7h8i9j0k1l'] }),
    object: Type.Literal('file'),
    bytes: Type.Integer(),
    created_at: Unix,
    filename: Type.String(),
    purpose: Type.String({
      description: '`fine-tune` (an upload) or `fine-tune-results` (the metrics CSV of a succeeded job)',
    }),
    format: Nullable(StringEnum(['csv', 'jsonl', 'image_zip', 'idx'])),
    status: StringEnum(['uploaded', 'processed', 'error']),
    status_details: Nullable(Type.String()),
    error: Nullable(FileError),
    stats: Nullable(AnyObject),
    expires_at: Nullable(
      Type.Integer({ description: 'Unix seconds when the file is deleted (upload `expires_after`), or null' }),
    ),
  },
  { $id: 'File' },
)

export const DeletedObject = Type.Object({ id: Type.String(), object: Type.String(), deleted: Type.Boolean() })

export const ModelObject = Type.Object(
  {
    id: Type.String({ examples: ['mnist-cnn', 'ft:mnist-cnn:refit:abc12345'] }),
    object: Type.Literal('model'),
    created: Unix,
    created_at: Unix,
    owned_by: Type.String(),
    kind: StringEnum(['builtin', 'uploaded', 'fine_tuned', 'architecture']),
    description: Nullable(Type.String()),
    base_model: Nullable(Type.String()),
    fine_tuning_job: Nullable(Type.String()),
    training_file: Nullable(Type.String()),
    input_shape: Nullable(Type.Array(Type.Integer())),
    classes: Nullable(Type.Array(Type.String())),
    preprocessing: Nullable(AnyObject),
    feature_layer: Nullable(Type.String()),
    metrics: Nullable(MetricsSummary),
    backend: Nullable(Type.String()),
    seed: Nullable(Type.Integer()),
    bytes: Nullable(Type.Integer()),
    sha256: Nullable(Type.String()),
  },
  { $id: 'Model' },
)

export const JobStatus = StringEnum([
  'validating_files',
  'queued',
  'running',
  'cancelling',
  'paused',
  'succeeded',
  'failed',
  'cancelled',
])

/** A failed job's error: `code` from the job failure catalogue (the API description's second table). */
export const JobError = Type.Object(
  {
    code: StringEnum(Object.keys(JOB_FAILURE_CODES) as JobFailureCode[], {
      description: 'Why the job failed: a code from the job failure catalogue (see the API description).',
    }),
    message: Type.String(),
    param: Nullable(Type.String({ description: 'the request field at fault, when one is' })),
    retryable: Type.Boolean({
      description:
        'true when retrying the job unchanged may succeed (a crash, a storage hiccup); false when something must change first (data, hyperparameters, model): clone and edit instead.',
    }),
  },
  { additionalProperties: false },
)

export const JobObject = Type.Object(
  {
    id: Type.String({ examples: ['ftjob-4f2k8d0s9a7q1w3e5r6t8y0u'] }),
    object: Type.Literal('fine_tuning.job'),
    model: Type.String(),
    created_at: Unix,
    started_at: Nullable(Unix),
    finished_at: Nullable(Unix),
    fine_tuned_model: Nullable(Type.String()),
    organization_id: Type.String({ description: 'The project id.' }),
    result_files: Type.Array(Type.String()),
    status: JobStatus,
    status_reason: Nullable(Type.String()),
    validation_file: Nullable(Type.String()),
    training_file: Type.String(),
    hyperparameters: JobHyperparameters,
    method: JobMethod,
    trained_tokens: Type.Null(),
    trained_samples: Nullable(Type.Integer()),
    error: Nullable(JobError),
    seed: Type.Integer(),
    suffix: Nullable(Type.String()),
    user_provided_suffix: Nullable(Type.String()),
    metadata: Nullable(Type.Record(Type.String(), Type.String())),
    integrations: Type.Array(AnyObject),
    estimated_finish: Nullable(Unix),
    backend: Nullable(Type.String({ description: 'TensorFlow.js backend that ran the job: tensorflow, wasm or cpu.' })),
    attempt: Type.Integer(),
    progress: Nullable(JobProgress),
    queue_position: Nullable(Type.Integer({ description: '1-based place in the training queue while queued' })),
    retry_of_job_id: Nullable(Type.String()),
    sweep_id: Nullable(
      Type.String({ description: 'the sweep this job is a trial of (GET /v1/fine_tuning/sweeps/{id}/trials)' }),
    ),
    sweep_values: Nullable(
      Type.Record(Type.String(), Type.Unknown(), {
        description: "a sweep trial's sampled value of each search_space path (null unless sweep_id is set)",
      }),
    ),
    init_checkpoint: Nullable(Type.String({ description: 'checkpoint the job started from, when `model` named one' })),
    resource_class: StringEnum(['auto', 'cpu', 'gpu'], { description: 'the hardware the job asked for' }),
  },
  { $id: 'FineTuningJob' },
)

export const EventObject = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('fine_tuning.job.event'),
    created_at: Unix,
    level: Type.String(),
    type: Type.String(),
    message: Type.String(),
    data: Nullable(AnyObject),
  },
  { $id: 'FineTuningJobEvent' },
)

export const CheckpointObject = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('fine_tuning.job.checkpoint'),
    created_at: Unix,
    fine_tuned_model_checkpoint: Type.String(),
    fine_tuning_job_id: Type.String(),
    step_number: Type.Integer(),
    epoch: Type.Integer(),
    metrics: CheckpointMetrics,
  },
  { $id: 'FineTuningJobCheckpoint' },
)

export const MetricObject = Type.Object(
  {
    id: Type.String({ description: '`mtr-<step>-<name>`: the row, and the `after` cursor of the next page' }),
    object: Type.Literal('fine_tuning.job.metric'),
    step: Type.Integer(),
    epoch: Type.Integer(),
    name: Type.String(),
    value: Type.Number(),
    created_at: Unix,
  },
  { $id: 'FineTuningJobMetric' },
)
