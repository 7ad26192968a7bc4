/** Every code the engine fails with; src/modules/jobs/failure-codes.ts must list each (checked at compile time). */
export type EngineErrorCode =
  | 'backend_cannot_train'
  | 'base_model_not_transferable'
  | 'checkpoint_invalid'
  | 'dataset_incompatible'
  | 'feature_layer_not_found'
  | 'invalid_hyperparameters'
  | 'invalid_method'
  | 'invalid_request'
  | 'model_not_classifier'
  | 'model_not_predictable'
  | 'too_few_classes'
  | 'teacher_classes_mismatch'
  | 'too_few_samples'
  | 'training_diverged'
  | 'unknown_architecture'

/** An engine failure with a stable snake_case code; `permanent` means retrying cannot help (bad data or spec). */
export class EngineError extends Error {
  readonly code: EngineErrorCode
  readonly permanent: boolean
  constructor(code: EngineErrorCode, message: string, permanent: boolean) {
    super(message)
    this.name = 'EngineError'
    this.code = code
    this.permanent = permanent
  }
}

/** The dataset cannot feed the model (shape, channels, kind or class count). */
export function incompatible(message: string): EngineError {
  return new EngineError('dataset_incompatible', message, true)
}
