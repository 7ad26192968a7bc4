// Metric summaries as the API shows them on models, admin jobs and checkpoints: one epoch's figures and
// the final/best summary (src/modules/jobs/lifecycle/metrics-summary.ts computes them, with the one
// definition of "best"). Closed: an epoch is numbers only; the summary names each field.
import { Type } from '@fastify/type-provider-typebox'
import { AnyObject, Nullable, StringEnum } from './common.js'

/** `{step, epoch, loss, accuracy, val_loss?, val_accuracy?, ...}`: every value a number. */
export const EpochMetrics = Type.Object(
  { step: Type.Integer(), epoch: Type.Integer() },
  {
    additionalProperties: Type.Number(),
    description: 'One epoch: step, epoch and its metric values (loss, accuracy, val_loss, val_accuracy)',
  },
)

export const BestBy = Type.Object(
  {
    metric: Type.String({ description: 'the metric that decided, e.g. val_accuracy' }),
    mode: StringEnum(['max', 'min']),
    rule: StringEnum(['early_stopping', 'highest'], {
      description: "early_stopping: the engine's monitor, whose weights it restored; highest: the best epoch seen",
    }),
  },
  { additionalProperties: false },
)

/** A model's (or a finished job's) metrics; models registered before the summary existed lack the `best_*` fields. */
export const MetricsSummary = Type.Object(
  {
    final: Nullable(EpochMetrics),
    best: Nullable(EpochMetrics),
    best_epoch: Type.Optional(Nullable(Type.Integer())),
    best_by: Type.Optional(Nullable(BestBy)),
    delivered_epoch: Type.Optional(Nullable(Type.Integer({ description: 'the epoch whose weights the model holds' }))),
    evaluation: Type.Optional(
      Nullable({ ...AnyObject, description: 'the held-out evaluation (accuracy, loss, per class, confusion matrix)' }),
    ),
  },
  { additionalProperties: false },
)

/** A checkpoint's epoch figures; a pause's mid-epoch checkpoint says so (`mid_epoch`) and holds the epoch so far. */
export const CheckpointMetrics = Type.Object(
  { mid_epoch: Type.Optional(Type.Boolean()) },
  { additionalProperties: Type.Number() },
)
