// Every error Refit returns, with a stable snake_case code. The OpenAPI document lists this catalogue,
// and the error handler turns AppError into the OpenAI-style envelope:
// {"error": {"message", "type", "code", "param", "request_id", "details"?}}.

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'conflict_error'
  | 'rate_limit_error'
  | 'server_error'

interface CatalogueEntry {
  status: number
  type: ErrorType
  description: string
}

/** HTTP error codes. Add here, never inline: the catalogue is published in the OpenAPI document. */
export const ERROR_CATALOGUE = {
  invalid_request: {
    status: 400,
    type: 'invalid_request_error',
    description: 'The request body, query or parameters do not match the schema.',
  },
  invalid_json: { status: 400, type: 'invalid_request_error', description: 'The body is not valid JSON.' },
  missing_file: { status: 400, type: 'invalid_request_error', description: 'A multipart upload has no `file` part.' },
  invalid_purpose: {
    status: 400,
    type: 'invalid_request_error',
    description: 'The file purpose is not supported (use `fine-tune`).',
  },
  invalid_format: {
    status: 400,
    type: 'invalid_request_error',
    description: 'The declared file format is not one of csv, jsonl, image_zip, idx.',
  },
  invalid_field: {
    status: 400,
    type: 'invalid_request_error',
    description: 'A multipart field has a value that is not allowed.',
  },
  body_too_large: { status: 413, type: 'invalid_request_error', description: 'The JSON body exceeds 1 MiB.' },
  file_too_large: { status: 413, type: 'invalid_request_error', description: 'The upload exceeds the size limit.' },
  unsupported_media_type: {
    status: 415,
    type: 'invalid_request_error',
    description: 'The route expects another content type.',
  },
  file_not_ready: {
    status: 400,
    type: 'invalid_request_error',
    description: 'The file has not been validated yet, or failed validation.',
  },
  file_in_use: { status: 409, type: 'conflict_error', description: 'The file is used by a job that has not finished.' },
  model_not_trainable: {
    status: 400,
    type: 'invalid_request_error',
    description: 'The model cannot be fine-tuned with this method.',
  },
  graph_model_op_unsupported: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'An uploaded TF.js graph model has a node the graph path cannot run (a fused form with no TensorFlow rewrite, several inputs or outputs); the message and details name the node and op.',
  },
  graph_model_feature_node_not_found: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'An uploaded TF.js graph model has no node named by feature_layer (or no MatMul whose input is the default feature node); details list the default.',
  },
  incompatible_dataset: {
    status: 400,
    type: 'invalid_request_error',
    description: "The base model cannot take the training file's data.",
  },
  teacher_classes_mismatch: {
    status: 400,
    type: 'invalid_request_error',
    description: "The distillation teacher's classes differ from the training file's.",
  },
  unsupported_method: {
    status: 400,
    type: 'invalid_request_error',
    description: 'The fine-tuning method is not available yet.',
  },
  invalid_hyperparameter: {
    status: 400,
    type: 'invalid_request_error',
    description: 'A hyperparameter is out of bounds.',
  },
  builtin_model_immutable: {
    status: 400,
    type: 'invalid_request_error',
    description: 'Built-in models cannot be deleted.',
  },
  model_in_use: {
    status: 409,
    type: 'conflict_error',
    description: 'The model is used by a job that has not finished.',
  },
  job_not_retryable: {
    status: 409,
    type: 'conflict_error',
    description: 'Only failed or cancelled jobs can be retried.',
  },
  idempotency_key_reused: {
    status: 422,
    type: 'invalid_request_error',
    description: 'The Idempotency-Key was used for a different request.',
  },
  idempotency_key_in_progress: {
    status: 409,
    type: 'conflict_error',
    description: 'A request with this Idempotency-Key is still running; retry shortly.',
  },
  job_not_cancellable: { status: 409, type: 'conflict_error', description: 'The job has already finished.' },
  invalid_search_space: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'A sweep `search_space` entry names no tunable field of `method.<type>`, has an empty or inverted range, or gives a value a job would refuse (`param` names the path).',
  },
  sweep_too_large: {
    status: 400,
    type: 'invalid_request_error',
    description: 'The sweep would run more trials than `max_trials` (a grid) or than MAX_SWEEP_TRIALS allows.',
  },
  sweep_metric_unavailable: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'The sweep ranks trials by a val_* metric but its trials have no validation data (no validation_file and validation_split 0).',
  },
  invalid_early_termination: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'A sweep\'s `early_termination` (ASHA) is unusable: `min_epochs` must be >= 1 and below every trial\'s `n_epochs` ("auto" as it resolves from the training set, or 5 while the file is still being validated), `reduction_factor` >= 2. `param` names the field.',
  },
  invalid_baseline_trial: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'A grid sweep was sent `baseline_trial: true`: a grid tries exactly its combinations (put the defaults among the `values` instead).',
  },
  sweep_not_cancellable: { status: 409, type: 'conflict_error', description: 'The sweep has already finished.' },
  job_not_pausable: {
    status: 409,
    type: 'conflict_error',
    description: 'The job has finished or is being cancelled; only validating_files, queued or running jobs pause.',
  },
  job_not_paused: { status: 409, type: 'conflict_error', description: 'Only a paused job can be resumed.' },
  missing_authorization: {
    status: 401,
    type: 'authentication_error',
    description: 'No `Authorization: Bearer` header.',
  },
  invalid_api_key: {
    status: 401,
    type: 'authentication_error',
    description: 'The bearer token is not a valid key for this route.',
  },
  admin_required: { status: 403, type: 'permission_error', description: 'A project key was used on an admin route.' },
  project_key_required: {
    status: 403,
    type: 'permission_error',
    description: 'The admin token was used on a project route.',
  },
  not_found: { status: 404, type: 'not_found_error', description: 'No such object in this project.' },
  route_not_found: { status: 404, type: 'not_found_error', description: 'No such route.' },
  service_unavailable: {
    status: 503,
    type: 'server_error',
    description: 'A backing service (database or Redis) is unreachable; retry shortly.',
  },
  internal_error: {
    status: 500,
    type: 'server_error',
    description: 'Unexpected error; the request id identifies it in the logs.',
  },
  invalid_model: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'An uploaded model zip is not a usable TF.js layers model; `details` name the entry and what was expected.',
  },
  invalid_input: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'A prediction input has the wrong type, shape or size; `details` name the input (`inputs[i]...`) and what was expected.',
  },
  model_not_predictable: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'The model cannot answer predictions or evaluations: it is an untrained architecture or has no class names.',
  },
  model_not_freezable: {
    status: 409,
    type: 'conflict_error',
    description:
      'The model cannot be exported as a frozen SavedModel (`format=saved_model`): a layer has no TensorFlow graph translation; the message and `details` name it. The default download (TF.js layers) still works.',
  },
  checkpoint_not_downloadable: {
    status: 409,
    type: 'conflict_error',
    description: 'The checkpoint holds only part of a model (no model.json or metadata.json): it cannot be downloaded.',
  },
  storage_quota_exceeded: {
    status: 403,
    type: 'permission_error',
    description:
      "The upload would take the project's stored bytes (datasets, result files, models, checkpoints, cached features) over its quota; delete files or models, or ask for a larger quota. 403, not 429: waiting does not help.",
  },
  too_many_jobs: {
    status: 429,
    type: 'rate_limit_error',
    description:
      'The project already has its maximum of unfinished jobs; retry after `Retry-After` seconds or cancel one.',
  },
  rate_limited: {
    status: 429,
    type: 'rate_limit_error',
    description: 'Too many requests for this API key (or address); retry after `Retry-After` seconds.',
  },
  overloaded: {
    status: 503,
    type: 'server_error',
    description:
      'The server is shedding load (event loop or memory under pressure); retry after `Retry-After` seconds.',
  },
  request_timeout: {
    status: 503,
    type: 'server_error',
    description: 'The request took longer than the server allows (REQUEST_TIMEOUT_MS); retry later.',
  },
  invalid_webhook_url: {
    status: 400,
    type: 'invalid_request_error',
    description: 'A webhook url must be an absolute http or https URL without credentials.',
  },
  admin_session_invalid: {
    status: 401,
    type: 'authentication_error',
    description: 'The admin session cookie is forged, expired or signed out; sign in again at /admin.',
  },
  csrf_failed: {
    status: 403,
    type: 'permission_error',
    description:
      'A state-changing admin call made with the session cookie lacks the `x-refit-csrf` header from GET /admin/session (or, on Bull Board, a same-origin Origin).',
  },
  // --- multi-tenant safety (issue 13) ---
  too_many_sign_in_attempts: {
    status: 429,
    type: 'rate_limit_error',
    description:
      'Too many failed admin sign-ins from this address (5 are free, then a doubling delay up to 15 minutes); retry after `Retry-After` seconds.',
  },
  unsafe_input: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'A parameter, JSON string or key, or multipart field holds a NUL character or an unpaired UTF-16 surrogate, or a number is not finite.',
  },
  invalid_multipart: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'The multipart body is malformed or ends before its closing boundary (a truncated upload); send it again.',
  },
  idempotent_replay_unavailable: {
    status: 409,
    type: 'conflict_error',
    description:
      'The request with this Idempotency-Key succeeded, but its answer held a secret shown only once (an API key, a webhook secret), so it is not replayed; GET the object or use a new key.',
  },
  webhook_url_forbidden: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'The webhook url is, or resolves to, a non-public address (loopback, private, link-local, CGNAT, ULA, multicast, unspecified or an IPv4-embedding IPv6 form); use a public host.',
  },
  too_many_webhooks: {
    status: 403,
    type: 'permission_error',
    description: 'The project has its maximum of webhooks (MAX_WEBHOOKS_PER_PROJECT); delete one first.',
  },
  // --- memory budgets (issue 14) ---
  training_memory_exceeded: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'The job is estimated to need more memory than a training process may use (TRAINING_MEMORY_BYTES); the message gives both figures. Lower batch_size, use smaller images or a smaller model.',
  },
  inference_memory_exceeded: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'The model (upload) or the request (predictions) is estimated to need more memory than an inference process may use (INFERENCE_MEMORY_BYTES); the message gives both figures. Send fewer inputs per request or use a model with a smaller input.',
  },
  evaluation_memory_exceeded: {
    status: 400,
    type: 'invalid_request_error',
    description:
      "The evaluation (model plus file) is estimated to need more memory than an evaluation process may use (TRAINING_MEMORY_BYTES, the training processes' budget on the workers); the message gives both figures. Evaluate on a smaller file or with a smaller model.",
  },
  inference_out_of_memory: {
    status: 503,
    type: 'server_error',
    description:
      'The inference process ran out of its memory budget and was killed while answering; a fresh one replaces it. Retry with fewer inputs.',
  },
  too_many_streams: {
    status: 429,
    type: 'rate_limit_error',
    description:
      'This API key (MAX_STREAMS_PER_KEY) or its project (MAX_STREAMS_PER_PROJECT) already has its maximum of open event streams; close one or retry after `Retry-After` seconds.',
  },
  prediction_timeout: {
    status: 504,
    type: 'server_error',
    description:
      'The prediction took longer than REQUEST_TIMEOUT_MS; its inference process was killed and replaced. Send fewer or smaller inputs, or retry.',
  },
  // OpenAI compatibility (issue 15): OpenAI's own codes where the concepts coincide.
  invalid_training_file: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'The `training_file` does not exist in this project (or was deleted), or is not a `fine-tune` dataset.',
  },
  invalid_validation_file: {
    status: 400,
    type: 'invalid_request_error',
    description:
      'The `validation_file` does not exist in this project (or was deleted), or is not a `fine-tune` dataset.',
  },
  integrations_not_supported: {
    status: 400,
    type: 'invalid_request_error',
    description: 'Refit has no integrations (such as wandb): send `integrations` as `[]` or `null`, or leave it out.',
  },
} as const satisfies Record<string, CatalogueEntry>

export type ErrorCode = keyof typeof ERROR_CATALOGUE

/** Where a fault is: a line of a file, an entry of an archive, a field of the body. */
export interface ErrorDetail {
  line?: number
  entry?: string
  field?: string
  message: string
}

export const MAX_ERROR_DETAILS = 20

/** An error the client can act on; thrown anywhere, rendered by the error handler. */
export class AppError extends Error {
  readonly status: number
  readonly type: ErrorType
  readonly param: string | null
  readonly details: ErrorDetail[] | undefined
  readonly headers: Record<string, string> | undefined

  constructor(
    readonly code: ErrorCode,
    message: string,
    opts: { param?: string | null; details?: ErrorDetail[]; headers?: Record<string, string> } = {},
  ) {
    super(message)
    const entry = ERROR_CATALOGUE[code]
    this.status = entry.status
    this.type = entry.type
    this.param = opts.param ?? null
    this.details = opts.details?.slice(0, MAX_ERROR_DETAILS)
    this.headers = opts.headers
  }
}

export const notFound = (what: string, id: string, param = 'id') =>
  new AppError('not_found', `No ${what} with id '${id}'.`, { param })
