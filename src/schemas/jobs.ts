// The job's contract, declared once: what a creation request may give (used by the project and admin
// routes, and through Static<> by the services), and the JSON parts as the API shows them —
// hyperparameters, method, progress — closed (no field the schema does not name reaches a client). Routes and OpenAPI use the schemas; the
// presenter reads the JSON columns through `read*` below, which also reads rows written before these
// schemas existed (missing fields take their documented meaning, unknown ones are dropped).
import { type Static, type TSchema, Type } from '@fastify/type-provider-typebox'
import { Value } from 'typebox/value'
import { Nullable, StringEnum } from './common.js'

const auto = <T extends TSchema>(t: T) => Type.Union([Type.Literal('auto'), t])

/** What a request may give for each number (the schema checks them, and so does creation). */
export const BOUNDS = {
  n_epochs: { min: 1, max: 200 },
  batch_size: { min: 1, max: 4096 },
  learning_rate: { min: 1e-7, max: 1 },
  validation_split: { min: 0, max: 0.5 },
  learning_rate_multiplier: { min: 1e-4, max: 1000 },
} as const

// ---------------------------------------------------------------- requests

/** `hyperparameters` as a request gives them (in `method.<type>` or, OpenAI's legacy form, at the top). */
export const HyperparametersInput = Type.Object(
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

/** `method` as a request gives it; `type` stays a free string so an unknown one gets its own error code. */
export const MethodInput = Type.Object(
  {
    type: Type.String({
      description:
        '"transfer", "supervised" or "distillation". Without `method`, the default is "supervised" for an architecture preset and "transfer" for every other model',
      examples: ['transfer'],
    }),
    transfer: Type.Optional(
      Type.Object(
        {
          hyperparameters: Type.Optional(HyperparametersInput),
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
      Type.Object({ hyperparameters: Type.Optional(HyperparametersInput) }, { additionalProperties: false }),
    ),
    distillation: Type.Optional(
      Type.Object(
        {
          hyperparameters: Type.Optional(HyperparametersInput),
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
    method: Type.Optional(MethodInput),
    hyperparameters: Type.Optional(HyperparametersInput),
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
export type HyperparametersInput = Static<typeof HyperparametersInput>
export type MethodInput = Static<typeof MethodInput>
export type CreateJobBody = Static<typeof CreateJobBody>

// ---------------------------------------------------------------- responses

/**
 * Resolved when the job's files are processed; until then (status `validating_files`, or a dry run on
 * unprocessed files) a field not given reads "auto".
 */
export const JobHyperparameters = Type.Object(
  {
    n_epochs: auto(Type.Integer()),
    batch_size: auto(Type.Integer()),
    learning_rate: auto(Type.Number()),
    learning_rate_multiplier: auto(Type.Number({ description: 'learning_rate / 0.001 (OpenAI clients)' })),
    validation_split: auto(Type.Number()),
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
