import type { DatasetProblem } from './types.js'

/** Stable, snake_case codes a client can branch on. */
export type DatasetErrorCode =
  | 'invalid_csv'
  | 'invalid_jsonl'
  | 'invalid_image_zip'
  | 'invalid_idx'
  | 'unrecognized_format'
  | 'too_few_classes'
  | 'empty_dataset'
  | 'dataset_too_large'
  | 'invalid_image'
  | 'validation_failed'
  | 'chat_format_not_supported'
  | 'too_many_classes'
  | 'invalid_label'

/** At most this many problems travel in `details`: enough to fix a file in one go, small enough for a response. */
export const MAX_PROBLEMS = 20

/** Bad user data. Callers map it to a 4xx response or a permanent job failure; never retried. */
export class DatasetValidationError extends Error {
  readonly code: DatasetErrorCode
  readonly details: DatasetProblem[]

  constructor(code: DatasetErrorCode, message: string, details: DatasetProblem[] = []) {
    super(message)
    this.name = 'DatasetValidationError'
    this.code = code
    this.details = details.slice(0, MAX_PROBLEMS)
  }
}

/** Where a problem is, as a prefix a user can read: "line 7, column x2: ". */
export function describeProblem(p: DatasetProblem): string {
  const where: string[] = []
  if (p.line !== undefined) where.push(`line ${p.line}`)
  if (p.entry !== undefined) where.push(`entry ${p.entry}`)
  if (p.field !== undefined) where.push(`${p.line !== undefined ? 'column' : 'field'} ${p.field}`)
  return where.length > 0 ? `${where.join(', ')}: ${p.message}` : p.message
}

/**
 * Collects problems so one upload reports many of them, not just the first. Readers stop early once it is
 * full: reading a multi-gigabyte file to report problem number 5000 helps nobody.
 */
export class ProblemCollector {
  readonly problems: DatasetProblem[] = []
  /** true when more problems were found than kept */
  truncated = false

  constructor(
    private readonly code: DatasetErrorCode,
    private readonly what: string,
  ) {}

  add(problem: DatasetProblem): void {
    if (this.problems.length < MAX_PROBLEMS) this.problems.push(problem)
    else this.truncated = true
  }

  get full(): boolean {
    return this.problems.length >= MAX_PROBLEMS
  }

  /** Throws one error carrying everything collected so far, if anything was collected. */
  throwIfAny(): void {
    if (this.problems.length === 0) return
    throw this.error()
  }

  /** Adds a last, fatal problem and throws. */
  fail(problem: DatasetProblem): never {
    this.add(problem)
    throw this.error()
  }

  error(): DatasetValidationError {
    const n = this.problems.length
    const count =
      this.truncated || n >= MAX_PROBLEMS ? `at least ${n} problems` : n === 1 ? '1 problem' : `${n} problems`
    const first = describeProblem(this.problems[0]!)
    return new DatasetValidationError(
      this.code,
      `The ${this.what} has ${count}; fix ${n === 1 ? 'it' : 'them'} and upload again. First: ${first}`,
      this.problems,
    )
  }
}
