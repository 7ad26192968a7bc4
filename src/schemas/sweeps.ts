// The sweep's contract: what a creation request may give and what the API shows. A sweep's trials are
// fine-tuning jobs, so the job's own contract (jobs.ts) validates each trial; this file only adds the
// search space and the ranking.
import { type Static, Type } from '@fastify/type-provider-typebox'
import { AnyObject, listOf, Nullable, StringEnum } from './common.js'
import { listExample, sweepEventExample, sweepEventStreamExample } from './examples.js'
import { CreateJobBody, MethodInput } from './jobs.js'

/** Explicit values to try (grid: every one; random: drawn uniformly). */
export const ValuesDimension = Type.Object(
  {
    values: Type.Array(Type.Union([Type.Number(), Type.String(), Type.Boolean(), Type.Null()]), { maxItems: 1000 }),
  },
  { additionalProperties: false },
)

/** A range to draw from (random only). */
export const RangeDimension = Type.Object(
  {
    min: Type.Number(),
    max: Type.Number(),
    scale: Type.Optional(StringEnum(['linear', 'log'], { description: 'default linear; log needs min > 0' })),
    type: Type.Optional(StringEnum(['float', 'int'], { description: 'default float' })),
  },
  { additionalProperties: false },
)
export type Dimension = Static<typeof ValuesDimension> | Static<typeof RangeDimension>

/** ASHA: trials compared at rungs (epochs min_epochs, min_epochs*rf, ...); the bottom of each rung stops. */
export const EarlyTermination = Type.Object(
  {
    type: StringEnum(['asha']),
    min_epochs: Type.Integer({ description: 'the first rung, in epochs; >= 1 and below the trials’ n_epochs' }),
    reduction_factor: Type.Integer({
      description:
        '>= 2: at each rung only the top 1/reduction_factor (at least one) of the trials that reached it go on',
    }),
  },
  { additionalProperties: false },
)
export type EarlyTermination = Static<typeof EarlyTermination>

export const SWEEP_METRICS = ['val_accuracy', 'val_loss', 'accuracy', 'loss'] as const

/** The body of `POST /v1/fine_tuning/sweeps`. */
export const CreateSweepBody = Type.Object(
  {
    model: CreateJobBody.properties.model,
    training_file: CreateJobBody.properties.training_file,
    validation_file: CreateJobBody.properties.validation_file,
    method: MethodInput,
    search_space: Type.Record(Type.String({ maxLength: 200 }), Type.Union([ValuesDimension, RangeDimension]), {
      minProperties: 1,
      maxProperties: 20,
      description:
        'Paths relative to `method.<type>` (e.g. `hyperparameters.learning_rate`, `head.hidden_units`, `temperature`) mapped to `{values: [...]}` or `{min, max, scale, type}`; a trial sets each path to its sampled value.',
    }),
    strategy: StringEnum(['grid', 'random'], {
      description: 'grid: every combination of `values` (at most max_trials); random: max_trials draws',
    }),
    max_trials: Type.Integer({ minimum: 1, maximum: 10_000, description: 'at most MAX_SWEEP_TRIALS' }),
    max_parallel: Type.Integer({ minimum: 1, maximum: 100, description: 'trials unfinished at once, at most' }),
    metric: StringEnum([...SWEEP_METRICS], {
      description: "ranks the trials, read from the epoch whose weights each trial's model holds",
    }),
    goal: StringEnum(['maximize', 'minimize']),
    seed: Type.Optional(
      Nullable(
        Type.Integer({
          minimum: 0,
          maximum: 2147483647,
          description: 'drives the sampling and is every trial’s job seed; random when not given',
        }),
      ),
    ),
    early_termination: Type.Optional(Nullable(EarlyTermination)),
    baseline_trial: Type.Optional(
      Type.Boolean({
        description:
          "default true for random, false for grid (grid refuses true): the first trial runs the hyperparameters a lone job with this request would use (the method's defaults, `auto` resolved from the training file) when every search-space path's default lies inside the search space, and ASHA never stops it, so the best trial is never worse on `metric` than a lone job; it counts toward max_trials and the draws follow it",
      }),
    ),
    keep_all_models: Type.Optional(
      Type.Boolean({
        description:
          "default false: when the sweep ends, every trial's model but the best is deleted (with its checkpoints)",
      }),
    ),
    suffix: CreateJobBody.properties.suffix,
    metadata: CreateJobBody.properties.metadata,
  },
  {
    additionalProperties: false,
    examples: [
      {
        model: 'mnist-cnn',
        training_file: 'file-0a1b2c3d4e5f6g7h8i9j0k1l',
        method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 3 } } },
        search_space: {
          'hyperparameters.learning_rate': { min: 0.0001, max: 0.01, scale: 'log' },
          'head.hidden_units': { values: [64, 128, 256] },
        },
        strategy: 'random',
        max_trials: 8,
        max_parallel: 2,
        metric: 'val_accuracy',
        goal: 'maximize',
        seed: 7,
        baseline_trial: true,
      },
    ],
  },
)
export type CreateSweepBody = Static<typeof CreateSweepBody>

const TrialValues = Type.Record(Type.String(), Type.Unknown(), { description: 'the sampled value of each path' })

export const SweepObject = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('fine_tuning.sweep'),
    created_at: Type.Integer(),
    finished_at: Nullable(Type.Integer()),
    status: StringEnum(['running', 'succeeded', 'failed', 'cancelled']),
    model: Type.String(),
    training_file: Type.String(),
    validation_file: Nullable(Type.String()),
    method: MethodInput,
    search_space: Type.Record(Type.String(), Type.Union([ValuesDimension, RangeDimension])),
    strategy: StringEnum(['grid', 'random']),
    max_trials: Type.Integer(),
    max_parallel: Type.Integer(),
    metric: StringEnum([...SWEEP_METRICS]),
    goal: StringEnum(['maximize', 'minimize']),
    seed: Type.Integer(),
    early_termination: Nullable(EarlyTermination),
    baseline_trial: Type.Boolean({ description: 'as requested (default true for random, false for grid)' }),
    baseline: Nullable(
      Type.Object(
        {
          trial: Type.Integer({ description: '0: the first in the plan' }),
          values: TrialValues,
        },
        {
          additionalProperties: false,
          description:
            "the trial that runs a lone job's defaults; null when baseline_trial is false or a default lies outside the search space or is not known yet (the `created` event says why)",
        },
      ),
    ),
    keep_all_models: Type.Boolean(),
    suffix: Nullable(Type.String()),
    metadata: Nullable(Type.Record(Type.String(), Type.String())),
    status_reason: Nullable(Type.String({ description: 'why it failed' })),
    progress: Type.Object(
      {
        trials_total: Type.Integer({ description: 'trials planned (grid size, or max_trials)' }),
        trials_created: Type.Integer(),
        trials_done: Type.Integer({ description: 'trials whose job has ended' }),
        trials_succeeded: Type.Integer(),
      },
      { additionalProperties: false },
    ),
    best_trial: Nullable(
      Type.Object(
        {
          trial: Type.Integer({ description: '0-based index in the plan' }),
          job_id: Type.String(),
          values: TrialValues,
          metric_value: Type.Number(),
        },
        { additionalProperties: false },
      ),
    ),
    best_model: Nullable(Type.String({ description: "the best trial's fine-tuned model" })),
  },
  { additionalProperties: false },
)
export type SweepObject = Static<typeof SweepObject>

export const TrialObject = Type.Object(
  {
    object: Type.Literal('fine_tuning.sweep.trial'),
    trial: Type.Integer({ description: '0-based index in the plan' }),
    values: TrialValues,
    metric_value: Nullable(Type.Number({ description: 'the sweep metric, once the trial succeeded' })),
    baseline: Type.Boolean({ description: "the trial that runs a lone job's defaults (see the sweep's baseline)" }),
    job: Type.Ref('FineTuningJob'),
  },
  { additionalProperties: false },
)

export const SweepEventObject = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('fine_tuning.sweep.event'),
    created_at: Type.Integer(),
    level: Type.String(),
    type: StringEnum(['created', 'trial_started', 'trial_ended', 'early_terminated', 'best_changed', 'ended'], {
      description:
        'created; trial_started (data: trial, job_id, values); trial_ended (trial, job_id, status, status_reason, metric, metric_value); early_terminated (trial, job_id, rung, metric, value, cutoff, trials_at_rung); best_changed (trial, job_id, values, metric, metric_value); ended (status, best_job_id, best_model, metric_value, models_pruned), always the last',
    }),
    message: Type.String(),
    data: Nullable(AnyObject),
  },
  { additionalProperties: false },
)

export const sweepEventsResponse = {
  description: 'A page of events, or (stream=true) an event stream',
  content: {
    'application/json': { schema: listOf(SweepEventObject), example: listExample(sweepEventExample) },
    'text/event-stream': { schema: { type: 'string' }, example: sweepEventStreamExample },
  },
}
