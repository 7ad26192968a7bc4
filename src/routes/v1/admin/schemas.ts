// Response schemas and examples of the cross-project admin routes (the dashboard's API).
import { type TObject, Type } from '@fastify/type-provider-typebox'
import { QUEUE_NAMES } from '../../../queue/registry.js'
import { Nullable, StringEnum } from '../../../schemas/common.js'
import { fileExample, jobExample, modelExample } from '../../../schemas/examples.js'
import { EpochMetrics } from '../../../schemas/metrics.js'
import { FileObject, JobObject, JobStatus, ModelObject } from '../../../schemas/objects.js'
import { SweepObject, TrialObject } from '../../../schemas/sweeps.js'

/** The project an object belongs to, named, so an operator sees whose it is. */
export const ProjectRef = Type.Object(
  { id: Type.String(), name: Type.String() },
  { additionalProperties: false, description: 'The owning project.' },
)

const withProject = <T extends TObject>(schema: T, nullable = false) =>
  Type.Object({ ...schema.properties, project: nullable ? Nullable(ProjectRef) : ProjectRef })

/** A job's last and best epoch, as the admin job and trial lists show them. */
const FinalAndBestMetrics = Nullable(
  Type.Object(
    { final: Nullable(EpochMetrics), best: Nullable(EpochMetrics) },
    // closed like the models' summary (src/schemas/metrics.ts): the page needs only these two
    {
      additionalProperties: false,
      description:
        "The last epoch and the best epoch (the one definition of best: see the model's metrics.best_by) as `{step, epoch, loss, accuracy, val_loss, val_accuracy}`; null before the first epoch.",
    },
  ),
)

/** A job as the project routes show it, plus its project and a summary of its epoch metrics. */
export const AdminJob = Type.Object({
  ...withProject(JobObject).properties,
  metrics: Type.Optional(FinalAndBestMetrics),
})

/** A sweep as the project routes show it, plus its project. */
export const AdminSweep = withProject(SweepObject)

/** A trial as the project routes show it, plus its job's last and best epoch (so a page needs no second read). */
export const AdminTrial = Type.Object({ ...TrialObject.properties, metrics: FinalAndBestMetrics })

export const AdminFile = withProject(FileObject)
/** Built-in models and presets belong to no project (`project: null`). */
export const AdminModel = withProject(ModelObject, true)

export const AdminListQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
  after: Type.Optional(Type.String({ maxLength: 200, description: 'Id of the last object of the previous page.' })),
  project: Type.Optional(Type.String({ maxLength: 200, description: 'Only this project (proj-…).' })),
}

export const AdminSweepQuery = Type.Object(
  { ...AdminListQuery, status: Type.Optional(SweepObject.properties.status) },
  { additionalProperties: false },
)

export const JOB_SORTS = ['created', 'status', 'project', 'duration', 'final', 'best'] as const

export const AdminJobQuery = Type.Object(
  {
    ...AdminListQuery,
    status: Type.Optional(JobStatus),
    method: Type.Optional(StringEnum(['transfer', 'supervised', 'distillation'])),
    model: Type.Optional(Type.String({ maxLength: 200, description: 'Only jobs that train this base model.' })),
    q: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 200,
        description: 'Search: jobs whose id, suffix, base model or fine-tuned model contains this (any case).',
      }),
    ),
    sort: Type.Optional(
      StringEnum([...JOB_SORTS], {
        description:
          'created (default), status, project (name), duration, final or best (validation accuracy, else training accuracy, of the last or best epoch). Any sort but created ranks the newest 1,000 matching jobs.',
      }),
    ),
    order: Type.Optional(
      StringEnum(['desc', 'asc'], { description: 'desc (default) or asc; jobs without a value last' }),
    ),
  },
  { additionalProperties: false },
)

export const AdminFileQuery = Type.Object(
  {
    ...AdminListQuery,
    status: Type.Optional(StringEnum(['uploaded', 'processed', 'error'])),
    format: Type.Optional(StringEnum(['csv', 'jsonl', 'image_zip', 'idx'])),
    purpose: Type.Optional(
      StringEnum(['fine-tune', 'fine-tune-results'], {
        description: '`fine-tune` (uploads) or `fine-tune-results` (the metrics CSVs of succeeded jobs)',
      }),
    ),
  },
  { additionalProperties: false },
)

export const AdminModelQuery = Type.Object(
  { ...AdminListQuery, kind: Type.Optional(StringEnum(['builtin', 'uploaded', 'fine_tuned', 'architecture'])) },
  { additionalProperties: false },
)

export const SampleImage = Type.Object({
  index: Type.Integer({ description: 'Position of the sample in the dataset (archive or IDX order).' }),
  label: Type.String(),
  width: Type.Integer(),
  height: Type.Integer(),
  channels: Type.Integer(),
  png_base64: Type.String({ description: 'The decoded sample re-encoded as PNG (at most 128 px on a side).' }),
})

export const SampleList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(SampleImage),
  has_more: Type.Boolean(),
})

const Counts = Type.Object({
  waiting: Type.Integer(),
  active: Type.Integer(),
  delayed: Type.Integer(),
  failed: Type.Integer(),
  completed: Type.Integer(),
  prioritized: Type.Integer(),
})

export const QueueHealth = Type.Object({
  name: StringEnum(QUEUE_NAMES),
  prefix: Type.String({ description: 'BullMQ key prefix (QUEUE_PREFIX).' }),
  paused: Type.Boolean(),
  counts: Counts,
})

const project = { id: 'proj-3k9x0c1v7b2n5m8q4w6e1r0t', name: 'digits' }
export const adminJobExample = { ...jobExample, project }
export const adminFileExample = { ...fileExample, project }
export const adminModelExample = { ...modelExample, project }
export const sampleListExample = {
  object: 'list',
  data: [{ index: 0, label: '5', width: 28, height: 28, channels: 1, png_base64: 'iVBORw0KGgoAAAANSUhEUgAA…' }],
  has_more: true,
}
export const queuesExample = {
  object: 'list',
  data: [
    {
      name: 'training',
      prefix: 'refit',
      paused: false,
      counts: { waiting: 2, active: 1, delayed: 0, failed: 0, completed: 14, prioritized: 0 },
    },
  ],
  has_more: false,
}
