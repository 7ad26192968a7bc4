// Why a job failed: every `error.code` a job can end with, whether retrying the same job can help, and
// what to do. Published in the OpenAPI document (like the HTTP codes in src/errors.ts); the job object
// carries `error.retryable` from here, and the dashboard offers "clone and edit" instead of Retry when
// it is false. Add a code here before any code path can fail a job with it: the lifecycle's `fail` and
// `reject` take only these codes.
import type { DatasetErrorCode } from '../../datasets/errors.js'
import type { EngineErrorCode } from '../../engine/errors.js'

interface FailureEntry {
  /** true: the same job, retried unchanged, may succeed (a crash, a lost file read); false: change something */
  retryable: boolean
  description: string
}

const dataset = (description: string): FailureEntry => ({ retryable: false, description })

export const JOB_FAILURE_CODES = {
  // --- the training process
  training_failed: {
    retryable: true,
    description: 'The training process hit an unexpected error; the message has it. Retrying may help.',
  },
  training_process_crashed: {
    retryable: true,
    description: 'The training process exited before finishing (killed or crashed). Retrying may help.',
  },
  file_not_found: {
    retryable: true,
    description: 'A stored file could not be read while training (storage hiccup). Retrying may help.',
  },
  out_of_memory: {
    retryable: false,
    description:
      'The training process passed its memory budget (TRAINING_MEMORY_BYTES) and was killed; the message and the failure event (`rss_bytes`, `limit_bytes`, `peak_rss_bytes`) give the figures. Lower batch_size or use smaller images.',
  },
  storage_quota_exceeded: {
    retryable: false,
    description: "Writing a checkpoint or the model would pass the project's storage quota; free space first.",
  },
  // --- what the job names, checked when it starts (the row outlived what it points at)
  base_model_missing: { retryable: false, description: 'The base model was deleted before the job started.' },
  teacher_model_missing: { retryable: false, description: 'The teacher model was deleted before the job started.' },
  training_file_missing: { retryable: false, description: 'The training file was deleted before the job started.' },
  validation_file_missing: {
    retryable: false,
    description: 'The validation file was deleted before the job started.',
  },
  checkpoint_missing: { retryable: false, description: 'The checkpoint the job starts from was deleted.' },
  // --- checks made once the files are validated (a job created before its files were processed)
  file_not_ready: {
    retryable: false,
    description: 'The training or validation file failed validation; `param` says which, the message why.',
  },
  incompatible_dataset: {
    retryable: false,
    description: "The dataset's samples do not fit the base model (image vs tabular, feature count).",
  },
  teacher_classes_mismatch: { retryable: false, description: "The teacher's classes differ from the dataset's." },
  invalid_hyperparameter: {
    retryable: false,
    description:
      'A hyperparameter does not fit the dataset once its size is known (e.g. early stopping without validation data).',
  },
  training_memory_exceeded: {
    retryable: false,
    description:
      'Once the files were known, the job was estimated to need more memory than TRAINING_MEMORY_BYTES; the message gives both figures.',
  },
  // --- the engine refused the spec or the data (EngineError, permanent)
  backend_cannot_train: {
    retryable: false,
    description: 'The TensorFlow.js backend in use cannot train this model (the message names the layer).',
  },
  base_model_not_transferable: {
    retryable: false,
    description: 'The base model names no feature layer to cut at; use method supervised or another model.',
  },
  checkpoint_invalid: { retryable: false, description: 'The checkpoint to start or resume from cannot be read.' },
  dataset_incompatible: {
    retryable: false,
    description: 'The dataset cannot feed the model (shape, channels, kind or class count); the message says which.',
  },
  feature_layer_not_found: { retryable: false, description: "The base model's feature layer does not exist." },
  invalid_hyperparameters: { retryable: false, description: 'The resolved hyperparameters are out of range.' },
  invalid_method: {
    retryable: false,
    description: 'The method fields (head, fine_tune, temperature, alpha) are invalid.',
  },
  invalid_request: { retryable: false, description: 'The training request is malformed (an internal refusal).' },
  model_not_classifier: { retryable: false, description: 'The base model has no classification output layer.' },
  model_not_predictable: { retryable: false, description: 'The model has no class names to predict with.' },
  training_diverged: {
    retryable: false,
    description: 'The loss became NaN or infinite; lower the learning rate (the same seed diverges again).',
  },
  too_few_classes: { retryable: false, description: 'The training data has fewer than 2 classes.' },
  too_few_samples: { retryable: false, description: 'The training data has fewer than 2 samples after the split.' },
  unknown_architecture: { retryable: false, description: 'The architecture preset does not exist.' },
  // --- the dataset failed to read while training (DatasetValidationError)
  invalid_csv: dataset('The CSV file could not be read; the message names the line.'),
  invalid_jsonl: dataset('The JSONL file could not be read; the message names the line.'),
  invalid_image_zip: dataset('The image zip could not be read; the message names the entry.'),
  invalid_idx: dataset('The IDX files could not be read.'),
  unrecognized_format: dataset('The file format could not be recognized.'),
  empty_dataset: dataset('The dataset has no rows.'),
  dataset_too_large: dataset('The dataset passes a size limit.'),
  invalid_image: dataset('An image could not be decoded or is too large; the message names the entry.'),
  validation_failed: dataset('The dataset failed validation.'),
  chat_format_not_supported: dataset('Chat-format JSONL is not trained by Refit (it trains classifiers).'),
  too_many_classes: dataset('The dataset has more classes than MAX_CLASSES.'),
  invalid_label: dataset(
    'A label is empty, too long (MAX_LABEL_CHARS) or holds forbidden characters; the message names the row.',
  ),
} as const satisfies Record<string, FailureEntry>

export type JobFailureCode = keyof typeof JOB_FAILURE_CODES

// Compile-time: every code the engine or the dataset readers can throw is in the catalogue.
type Uncatalogued = Exclude<EngineErrorCode | DatasetErrorCode, JobFailureCode>
const _everyCodeCatalogued: [Uncatalogued] extends [never] ? true : Uncatalogued = true
void _everyCodeCatalogued

export const isJobFailureCode = (code: string): code is JobFailureCode => Object.hasOwn(JOB_FAILURE_CODES, code)

/**
 * A code from a child process or an older row, as the catalogue knows it: unknown codes (a newer worker,
 * a row from before the catalogue) read as `training_failed`, which is retryable.
 */
export const catalogued = (code: string): JobFailureCode => (isJobFailureCode(code) ? code : 'training_failed')

/** The job object's `error`: code, message, param and whether retrying unchanged can help. */
export function presentJobError(code: string | null, message: string | null, param: string | null) {
  if (!code) return null
  return { code, message: message ?? '', param, retryable: JOB_FAILURE_CODES[catalogued(code)].retryable }
}

/** Thrown where a job (not a request) is refused: the lifecycle fails the job with its code and param. */
export class JobFailure extends Error {
  constructor(
    readonly code: JobFailureCode,
    message: string,
    readonly param: string | null = null,
  ) {
    super(message)
    this.name = 'JobFailure'
  }
}
