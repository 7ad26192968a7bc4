// Hyperparameters shared by every method, with "auto" resolved by documented rules from the training
// set's size and echoed back on the job. The rules are in the README and the OpenAPI document.
import { AppError } from '../../errors.js'
import { BOUNDS, type HyperparametersInput } from '../../schemas/jobs.js'

export type Auto<T> = T | 'auto'
export type OptimizerName = 'adam' | 'sgd' | 'rmsprop'

export type { HyperparametersInput }

export interface Hyperparameters {
  n_epochs: number
  batch_size: number
  learning_rate: number
  /** learning_rate / BASE_LEARNING_RATE, echoed for OpenAI clients */
  learning_rate_multiplier: number
  validation_split: number
  optimizer: OptimizerName
  early_stopping: { patience: number; min_delta: number; monitor: 'val_loss' | 'val_accuracy' } | null
}

export { BOUNDS }

/** Every method's default rate; OpenAI's `learning_rate_multiplier` multiplies it. */
export const BASE_LEARNING_RATE = 0.001

/** 0.001 × 3 is 0.0030000000000000005 in floating point: keep the rate a user would write. */
export const roundRate = (x: number) => Number(x.toPrecision(12))

/** The learning rate the caller asked for (absolute or as a multiplier), or undefined for "auto". */
export function explicitLearningRate(hp: HyperparametersInput): number | undefined {
  if (typeof hp.learning_rate === 'number') return hp.learning_rate
  if (typeof hp.learning_rate_multiplier === 'number')
    return roundRate(BASE_LEARNING_RATE * hp.learning_rate_multiplier)
  return undefined
}

/** Bounds are checked at creation, before the training set is known (the schema checks them too). */
export function checkBounds(hp: HyperparametersInput, param: string) {
  const given = (v: unknown) => v !== undefined && v !== 'auto'
  if (given(hp.learning_rate) && given(hp.learning_rate_multiplier))
    throw new AppError(
      'invalid_hyperparameter',
      'Give learning_rate (absolute) or learning_rate_multiplier (times 0.001), not both.',
      { param: `${param}.learning_rate_multiplier` },
    )
  for (const [name, b] of Object.entries(BOUNDS)) {
    const v = hp[name as keyof typeof BOUNDS]
    if (v === undefined || v === 'auto') continue
    if (typeof v !== 'number' || !Number.isFinite(v) || v < b.min || v > b.max)
      throw new AppError(
        'invalid_hyperparameter',
        `${name} must be "auto" or a number in [${b.min}, ${b.max}], got ${v}.`,
        { param: `${param}.${name}` },
      )
    if ((name === 'n_epochs' || name === 'batch_size') && !Number.isInteger(v))
      throw new AppError('invalid_hyperparameter', `${name} must be a whole number, got ${v}.`, {
        param: `${param}.${name}`,
      })
  }
  const es = hp.early_stopping
  if (es && hp.validation_split === 0 && (es.monitor ?? 'val_loss').startsWith('val_'))
    throw new AppError(
      'invalid_hyperparameter',
      'early_stopping monitors a validation metric, so validation_split cannot be 0 (or give a validation_file).',
      { param: `${param}.early_stopping` },
    )
}

/**
 * n_epochs: 5 from 20k rows (the Keras mnist_transfer_cnn schedule), 10 from 2k, else 20;
 * batch_size: 128 from 10k rows, 64 from 1k, else 16; learning_rate: 0.001 (× learning_rate_multiplier
 * when that is given instead); optimizer: adam;
 * validation_split: 0.1, or 0 when a validation file is given; early_stopping: off unless given
 * (patience 3, min_delta 0, monitor val_loss when given partially).
 */
export function resolveHyperparameters(
  hp: HyperparametersInput,
  rows: number,
  hasValidationFile: boolean,
): Hyperparameters {
  const pick = <T>(v: Auto<T> | undefined, auto: T): T => (v === undefined || v === 'auto' ? auto : v)
  const es = hp.early_stopping
  const learningRate = explicitLearningRate(hp) ?? BASE_LEARNING_RATE
  return {
    n_epochs: pick(hp.n_epochs, rows >= 20_000 ? 5 : rows >= 2_000 ? 10 : 20),
    batch_size: pick(hp.batch_size, rows >= 10_000 ? 128 : rows >= 1_000 ? 64 : 16),
    learning_rate: learningRate,
    learning_rate_multiplier:
      typeof hp.learning_rate_multiplier === 'number'
        ? hp.learning_rate_multiplier
        : roundRate(learningRate / BASE_LEARNING_RATE),
    validation_split: pick(hp.validation_split, hasValidationFile ? 0 : 0.1),
    optimizer: pick(hp.optimizer, 'adam'),
    early_stopping: es
      ? { patience: es.patience ?? 3, min_delta: es.min_delta ?? 0, monitor: es.monitor ?? 'val_loss' }
      : null,
  }
}
