// "auto" rules for transfer hyperparameters, resolved from the training set size and echoed back on
// the job. Documented in the README and in the OpenAPI document.
import { AppError } from '../../errors.js'

export type Auto<T> = T | 'auto'

export interface TransferHyperparametersInput {
  n_epochs?: Auto<number>
  batch_size?: Auto<number>
  learning_rate?: Auto<number>
  validation_split?: Auto<number>
}

export interface TransferHyperparameters {
  n_epochs: number
  batch_size: number
  learning_rate: number
  validation_split: number
}

export const BOUNDS = {
  n_epochs: { min: 1, max: 200 },
  batch_size: { min: 1, max: 4096 },
  learning_rate: { min: 1e-7, max: 1 },
  validation_split: { min: 0, max: 0.5 },
} as const

/** Bounds are checked at creation, before the training set is known. */
export function checkBounds(hp: TransferHyperparametersInput, param: string) {
  for (const [name, b] of Object.entries(BOUNDS)) {
    const v = hp[name as keyof TransferHyperparametersInput]
    if (v === undefined || v === 'auto') continue
    if (typeof v !== 'number' || !Number.isFinite(v) || v < b.min || v > b.max)
      throw new AppError(
        'invalid_hyperparameter',
        `${name} must be "auto" or a number in [${b.min}, ${b.max}], got ${v}.`,
        {
          param: `${param}.${name}`,
        },
      )
    if ((name === 'n_epochs' || name === 'batch_size') && !Number.isInteger(v))
      throw new AppError('invalid_hyperparameter', `${name} must be a whole number, got ${v}.`, {
        param: `${param}.${name}`,
      })
  }
}

/**
 * n_epochs: 5 from 20k rows (the Keras mnist_transfer_cnn schedule), 10 from 2k, else 20;
 * batch_size: 128 from 10k rows, 64 from 1k, else 16; learning_rate: 0.001 (Adam);
 * validation_split: 0.1, or 0 when a validation file is given.
 */
export function resolveHyperparameters(
  hp: TransferHyperparametersInput,
  rows: number,
  hasValidationFile: boolean,
): TransferHyperparameters {
  const pick = <T>(v: Auto<T> | undefined, auto: T): T => (v === undefined || v === 'auto' ? auto : v)
  return {
    n_epochs: pick(hp.n_epochs, rows >= 20_000 ? 5 : rows >= 2_000 ? 10 : 20),
    batch_size: pick(hp.batch_size, rows >= 10_000 ? 128 : rows >= 1_000 ? 64 : 16),
    learning_rate: pick(hp.learning_rate, 0.001),
    validation_split: pick(hp.validation_split, hasValidationFile ? 0 : 0.1),
  }
}
