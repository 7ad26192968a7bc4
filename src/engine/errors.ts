/** An engine failure with a stable snake_case code; `permanent` means retrying cannot help (bad data or spec). */
export class EngineError extends Error {
  readonly code: string
  readonly permanent: boolean
  constructor(code: string, message: string, permanent: boolean) {
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
