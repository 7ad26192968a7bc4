// The job's JSON parts as the API shows them — hyperparameters, method, progress — declared once and
// closed (no field the schema does not name reaches a client). Routes and OpenAPI use the schemas; the
// presenter reads the JSON columns through `read*` below, which also reads rows written before these
// schemas existed (missing fields take their documented meaning, unknown ones are dropped).
import { type Static, type TSchema, Type } from '@fastify/type-provider-typebox'
import { Value } from 'typebox/value'
import { Nullable, StringEnum } from './common.js'

const autoOr = <T extends TSchema>(t: T) => Type.Union([Type.Literal('auto'), t])

/**
 * Resolved when the job's files are processed; until then (status `validating_files`, or a dry run on
 * unprocessed files) a field not given reads "auto".
 */
export const JobHyperparameters = Type.Object(
  {
    n_epochs: autoOr(Type.Integer()),
    batch_size: autoOr(Type.Integer()),
    learning_rate: autoOr(Type.Number()),
    learning_rate_multiplier: autoOr(Type.Number({ description: 'learning_rate / 0.001 (OpenAI clients)' })),
    validation_split: autoOr(Type.Number()),
    optimizer: Type.Union([Type.Literal('auto'), StringEnum(['adam', 'sgd', 'rmsprop'])]),
    early_stopping: Nullable(
      Type.Object(
        {
          patience: Type.Optional(Type.Integer()),
          min_delta: Type.Optional(Type.Number()),
          monitor: Type.Optional(StringEnum(['val_loss', 'val_accuracy'])),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false, description: 'As resolved ("auto" until the files are processed)' },
)
export type JobHyperparameters = Static<typeof JobHyperparameters>

const TransferConfig = Type.Object(
  {
    head: Type.Object({ hidden_units: Type.Integer(), dropout: Type.Number() }, { additionalProperties: false }),
    unfreeze_top_blocks: Type.Integer(),
    fine_tune: Nullable(
      Type.Object({ n_epochs: Type.Integer(), learning_rate: Type.Number() }, { additionalProperties: false }),
    ),
    hyperparameters: JobHyperparameters,
  },
  { additionalProperties: false },
)
const SupervisedConfig = Type.Object({ hyperparameters: JobHyperparameters }, { additionalProperties: false })
const DistillationConfig = Type.Object(
  {
    teacher_model: Type.String(),
    temperature: Type.Number(),
    alpha: Type.Number(),
    hyperparameters: JobHyperparameters,
  },
  { additionalProperties: false },
)

/** OpenAI's shape: `{type, <type>: {...}}`; only the object named by `type` is present. */
export const JobMethod = Type.Object(
  {
    type: StringEnum(['transfer', 'supervised', 'distillation']),
    transfer: Type.Optional(TransferConfig),
    supervised: Type.Optional(SupervisedConfig),
    distillation: Type.Optional(DistillationConfig),
  },
  { additionalProperties: false, description: '`{type, <type>: {hyperparameters, ...}}`, as resolved' },
)
export type JobMethod = Static<typeof JobMethod>

/** Written by the worker while the job trains (at most once a second) and completed when it ends. */
export const JobProgress = Type.Object(
  {
    epoch: Type.Optional(Type.Integer({ description: '1-based epoch being trained' })),
    total_epochs: Type.Optional(Type.Integer()),
    step: Type.Optional(Type.Integer({ description: 'batch within the epoch' })),
    total_steps: Type.Optional(Type.Integer({ description: 'batches per epoch' })),
    fraction: Type.Number({ minimum: 0, maximum: 1, description: 'share of the training done' }),
    samples_per_second: Type.Optional(Type.Number()),
    estimated_finish: Nullable(
      Type.Integer({ description: 'Unix seconds, smoothed from the training phase’s pace; null when unknown' }),
    ),
  },
  { additionalProperties: false },
)
export type JobProgress = Static<typeof JobProgress>

const HP_KEYS = Object.keys(JobHyperparameters.properties) as (keyof JobHyperparameters)[]

/** The `hyperparameters` column (resolved, or the request's until the files are processed) as shown. */
export function readHyperparameters(json: unknown): JobHyperparameters {
  const raw = (json && typeof json === 'object' ? json : {}) as Record<string, unknown>
  const out: Record<string, unknown> = {}
  for (const k of HP_KEYS) out[k] = raw[k] ?? (k === 'early_stopping' ? null : 'auto')
  // rows from before the multiplier was echoed: derive it from the rate
  if (out.learning_rate_multiplier === 'auto' && typeof out.learning_rate === 'number')
    out.learning_rate_multiplier = Number((out.learning_rate / 0.001).toPrecision(12))
  return clean(JobHyperparameters, out)
}

/** The `progress` column as shown, or null before the first report. */
export function readProgress(json: unknown): JobProgress | null {
  if (!json || typeof json !== 'object') return null
  const raw = json as Record<string, unknown>
  const out: Record<string, unknown> = { fraction: raw.fraction ?? 0, estimated_finish: raw.estimated_finish ?? null }
  for (const k of Object.keys(JobProgress.properties)) if (raw[k] !== undefined) out[k] = raw[k]
  return clean(JobProgress, out)
}

/**
 * The method as shown: the stored config (every "auto" resolved at creation) with the hyperparameters
 * inside it, as OpenAI nests them.
 */
export function readMethod(json: unknown, hyperparameters: JobHyperparameters): JobMethod {
  const stored = json as { type: JobMethod['type'] } & Record<string, unknown>
  const config = (stored[stored.type] ?? {}) as Record<string, unknown>
  const shown = { type: stored.type, [stored.type]: { ...config, hyperparameters } }
  return clean(JobMethod, shown)
}

/** Drops the fields the schema does not name (a row may carry more than the contract shows). */
function clean<T extends TSchema>(schema: T, value: unknown): Static<T> {
  return Value.Clean(schema as TSchema, structuredClone(value)) as Static<T>
}
