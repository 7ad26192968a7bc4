// Examples for the OpenAPI document: realistic request and response values, shown by Swagger UI and checked
// against their schemas by test/openapi.test.ts. They describe one story: digits 5-9 uploaded as IDX and
// a transfer job from mnist-cnn.
import type { TSchema } from '@fastify/type-provider-typebox'

const T = 1764370000 // a fixed time, so the document never changes

export const FILE_ID = 'file-0a1b2c3d4e5f6g7h8i9j0k1l'
export const JOB_ID = 'ftjob-4f2k8d0s9a7q1w3e5r6t8y0u'
export const MODEL_ID = 'ft:mnist-cnn:digits:4f2k8d0s'

/** A JSON response documented with an example (a `$ref` cannot carry `examples` beside it). */
export function jsonResponse(schema: TSchema, example: unknown, description = 'Default Response') {
  return { description, content: { 'application/json': { schema, example } } }
}

/** The list envelope around one example item. */
export const listExample = (item: unknown) => ({ object: 'list', data: [item], has_more: false })

export const fileExample = {
  id: FILE_ID,
  object: 'file',
  bytes: 8_862_346,
  created_at: T,
  filename: 'digits-5-9.zip',
  purpose: 'fine-tune',
  format: 'idx',
  status: 'processed',
  status_details: null,
  error: null,
  stats: {
    rows: 29404,
    image_shape: [28, 28, 1],
    classes: ['5', '6', '7', '8', '9'],
    class_counts: { '5': 5421, '6': 5918, '7': 6265, '8': 5851, '9': 5949 },
  },
  expires_at: null,
}

export const uploadedFileExample = { ...fileExample, format: null, status: 'uploaded', stats: null }

export const fileUploadExample = { purpose: 'fine-tune', file: '(binary: digits-5-9.zip)', format: 'idx' }

export const modelExample = {
  id: MODEL_ID,
  object: 'model',
  created: T + 60,
  created_at: T + 60,
  owned_by: 'proj-3k9x0c1v7b2n5m8q4w6e1r0t',
  kind: 'fine_tuned',
  description: null,
  base_model: 'mnist-cnn',
  fine_tuning_job: JOB_ID,
  training_file: FILE_ID,
  input_shape: [28, 28, 1],
  classes: ['5', '6', '7', '8', '9'],
  preprocessing: { scale: 0.00392156862745098, offset: 0 },
  feature_layer: 'flatten',
  metrics: {
    final: { step: 1035, epoch: 5, loss: 0.0254, accuracy: 0.9921, val_loss: 0.0212, val_accuracy: 0.9935 },
    best: { step: 1035, epoch: 5, loss: 0.0254, accuracy: 0.9921, val_loss: 0.0212, val_accuracy: 0.9935 },
    best_epoch: 5,
    best_by: { metric: 'val_accuracy', mode: 'max', rule: 'highest' },
    delivered_epoch: 5,
    evaluation: { accuracy: 0.9935, loss: 0.0212, samples: 2475 },
  },
  backend: 'tensorflow',
  seed: 42,
  bytes: 1_203_884,
  sha256: '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
}

export const modelUploadExample = {
  file: '(binary: iris-model.zip)',
  input_shape: '[4]',
  classes: '["setosa","versicolor","virginica"]',
  feature_layer: 'dense_1',
  description: 'Iris classifier trained in Keras and converted with tensorflowjs_converter',
}

export const uploadedModelExample = {
  ...modelExample,
  id: 'model-5t7y9u1i3o5p7a9s1d3f5g7h',
  kind: 'uploaded',
  description: modelUploadExample.description,
  base_model: null,
  fine_tuning_job: null,
  training_file: null,
  input_shape: [4],
  classes: ['setosa', 'versicolor', 'virginica'],
  preprocessing: { scale: 1, offset: 0 },
  feature_layer: 'dense_1',
  metrics: null,
  backend: null,
  seed: null,
  bytes: 6_412,
}

export const deletedExample = (id: string, object: string) => ({ id, object, deleted: true })

/** A resolved job's hyperparameters (src/schemas/jobs.ts: every field, as the API shows them). */
const JOB_HYPERPARAMETERS = {
  n_epochs: 5,
  batch_size: 128,
  learning_rate: 0.001,
  learning_rate_multiplier: 1,
  validation_split: 0.1,
  optimizer: 'adam',
  early_stopping: null,
}

export const jobExample = {
  id: JOB_ID,
  object: 'fine_tuning.job',
  model: 'mnist-cnn',
  created_at: T,
  started_at: T + 2,
  finished_at: T + 24,
  fine_tuned_model: MODEL_ID,
  organization_id: 'proj-3k9x0c1v7b2n5m8q4w6e1r0t',
  result_files: [],
  status: 'succeeded',
  status_reason: null,
  validation_file: null,
  training_file: FILE_ID,
  hyperparameters: JOB_HYPERPARAMETERS,
  method: {
    type: 'transfer',
    transfer: {
      head: { hidden_units: 128, dropout: 0.5 },
      unfreeze_top_blocks: 0,
      fine_tune: null,
      hyperparameters: JOB_HYPERPARAMETERS,
    },
  },
  trained_tokens: null,
  trained_samples: 132318,
  error: null,
  seed: 42,
  suffix: 'digits',
  user_provided_suffix: 'digits',
  metadata: null,
  integrations: [],
  estimated_finish: null,
  backend: 'tensorflow',
  attempt: 1,
  progress: {
    epoch: 5,
    total_epochs: 5,
    step: 207,
    total_steps: 207,
    fraction: 1,
    samples_per_second: 9400,
    estimated_finish: null,
  },
  queue_position: null,
  retry_of_job_id: null,
  sweep_id: null,
  sweep_values: null,
  init_checkpoint: null,
  resource_class: 'auto',
}

export const queuedJobExample = {
  ...jobExample,
  started_at: null,
  finished_at: null,
  fine_tuned_model: null,
  status: 'queued',
  trained_samples: null,
  backend: null,
  progress: null,
  queue_position: 1,
}

export const cancellingJobExample = {
  ...jobExample,
  finished_at: null,
  fine_tuned_model: null,
  status: 'cancelling',
  trained_samples: null,
  progress: { ...jobExample.progress, epoch: 2, step: 88, fraction: 0.285, estimated_finish: T + 20 },
  estimated_finish: T + 20,
}

export const pausedJobExample = {
  ...cancellingJobExample,
  status: 'paused',
  status_reason: 'paused by user at step 88',
  estimated_finish: null,
  progress: { ...cancellingJobExample.progress, estimated_finish: null },
}

export const eventExample = {
  id: 'ftevent-8h3j5k7l9z1x2c4v6b8n0m2q',
  object: 'fine_tuning.job.event',
  created_at: T + 9,
  level: 'info',
  type: 'metrics',
  message: 'Epoch 2/5: loss 0.0412, accuracy 0.9871, val_loss 0.0305, val_accuracy 0.9905',
  data: { epoch: 2, loss: 0.0412, accuracy: 0.9871, val_loss: 0.0305, val_accuracy: 0.9905 },
}

export const eventStreamExample = `retry: 2000

id: 7
event: event
data: {"id":"ftevent-8h3j5k7l9z1x2c4v6b8n0m2q","object":"fine_tuning.job.event","created_at":${T + 9},"level":"info","type":"metrics","message":"Epoch 2/5: loss 0.0412, accuracy 0.9871, val_loss 0.0305, val_accuracy 0.9905","data":null}

event: job
data: {"id":"${JOB_ID}","object":"fine_tuning.job","status":"running","progress":{"epoch":3,"total_epochs":5,"step":12,"total_steps":207,"fraction":0.412,"samples_per_second":9400,"estimated_finish":${T + 20}}}

event: done
data: {"status":"succeeded","fine_tuned_model":"${MODEL_ID}"}
`

export const checkpointExample = {
  id: 'ftckpt-2w4e6r8t0y1u3i5o7p9a1s3d',
  object: 'fine_tuning.job.checkpoint',
  created_at: T + 20,
  fine_tuned_model_checkpoint: `${MODEL_ID}:ckpt-step-1035`,
  fine_tuning_job_id: JOB_ID,
  step_number: 1035,
  epoch: 5,
  metrics: { loss: 0.0254, accuracy: 0.9921, val_loss: 0.0212, val_accuracy: 0.9935 },
}

export const metricsExample = {
  object: 'list',
  data: [
    {
      id: 'mtr-207-accuracy',
      object: 'fine_tuning.job.metric',
      step: 207,
      epoch: 1,
      name: 'accuracy',
      value: 0.9612,
      created_at: T + 6,
    },
    {
      id: 'mtr-207-loss',
      object: 'fine_tuning.job.metric',
      step: 207,
      epoch: 1,
      name: 'loss',
      value: 0.1287,
      created_at: T + 6,
    },
    {
      id: 'mtr-207-val_accuracy',
      object: 'fine_tuning.job.metric',
      step: 207,
      epoch: 1,
      name: 'val_accuracy',
      value: 0.9823,
      created_at: T + 6,
    },
    {
      id: 'mtr-207-val_loss',
      object: 'fine_tuning.job.metric',
      step: 207,
      epoch: 1,
      name: 'val_loss',
      value: 0.0561,
      created_at: T + 6,
    },
  ],
  has_more: false,
}

export const lineageExample = {
  object: 'model.lineage',
  model: MODEL_ID,
  chain: [
    { id: MODEL_ID, kind: 'fine_tuned', base_model: 'mnist-cnn', fine_tuning_job: JOB_ID, deleted: false },
    { id: 'mnist-cnn', kind: 'builtin', base_model: null, fine_tuning_job: null, deleted: false },
  ],
  teacher: null,
  job: {
    id: JOB_ID,
    status: 'succeeded',
    method: jobExample.method,
    hyperparameters: jobExample.hyperparameters,
    seed: 42,
    backend: 'tensorflow',
    validation_file: null,
    created_at: T,
    finished_at: T + 24,
  },
  training_file: {
    id: FILE_ID,
    filename: 'digits-5-9.zip',
    format: 'idx',
    bytes: 8_862_346,
    sha256: '2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae',
    rows: 29404,
    classes: ['5', '6', '7', '8', '9'],
    deleted: false,
  },
  checkpoints: [
    {
      id: 'ftckpt-2w4e6r8t0y1u3i5o7p9a1s3d',
      epoch: 5,
      step: 1035,
      metrics: checkpointExample.metrics,
      created_at: T + 20,
    },
  ],
}

export const evaluationExample = {
  id: 'eval-0a1b2c3d4e5f6g7h8i9j0k1l',
  object: 'model.evaluation',
  model: MODEL_ID,
  file: 'file-9z8y7x6w5v4u3t2s1r0q9p8o',
  status: 'succeeded',
  created_at: T + 100,
  finished_at: T + 104,
  backend: 'tensorflow',
  result: {
    loss: 0.0231,
    accuracy: 0.9932,
    samples: 4861,
    classes: ['5', '6', '7', '8', '9'],
    per_class: [
      { class: '5', precision: 0.9944, recall: 0.9933, support: 892 },
      { class: '6', precision: 0.9958, recall: 0.9927, support: 958 },
      { class: '7', precision: 0.9932, recall: 0.9951, support: 1028 },
      { class: '8', precision: 0.9887, recall: 0.9908, support: 974 },
      { class: '9', precision: 0.994, recall: 0.9941, support: 1009 },
    ],
    confusion_matrix: [
      [886, 1, 0, 4, 1],
      [3, 951, 0, 4, 0],
      [0, 0, 1023, 1, 4],
      [2, 3, 1, 965, 3],
      [0, 0, 6, 0, 1003],
    ],
  },
  error: null,
}

export const predictionsMultipartExample = { image: ['(binary: seven.png)'], top_k: '2' }

/** The first of a schema's own `examples`. */
export const exampleOf = (schema: TSchema): unknown => (schema as { examples?: unknown[] }).examples?.[0]

export const PROJECT_ID = 'proj-3k9x0c1v7b2n5m8q4w6e1r0t'

export const projectExample = { id: PROJECT_ID, object: 'project', name: 'digits', created_at: T }

export const apiKeyInfoExample = {
  id: 'key-8h2j4k6l8z0x2c4v6b8n0m2q',
  object: 'api_key',
  project_id: PROJECT_ID,
  name: 'laptop',
  prefix: 'a1b2c3d4e5f6',
  created_at: T,
  last_used_at: T + 120,
  revoked_at: null,
}

export const apiKeyCreatedExample = {
  id: apiKeyInfoExample.id,
  object: 'api_key',
  project_id: PROJECT_ID,
  name: 'laptop',
  key: 'rk-a1b2c3d4e5f6.Zm9yIGV4YW1wbGUgb25seSwgbm90IGEgcmVhbCBrZXkAAAA',
  prefix: 'a1b2c3d4e5f6',
  created_at: T,
}

export const projectUsageExample = {
  id: PROJECT_ID,
  object: 'project.usage',
  storage_quota_bytes: 10_737_418_240,
  storage_used_bytes: 8_862_346,
  max_concurrent_jobs: 4,
  unfinished_jobs: 1,
}

export const readinessExample = { status: 'ok', checks: { database: { status: 'ok' }, redis: { status: 'ok' } } }

export const prometheusExample = `# HELP refit_queue_jobs Jobs per queue and state
# TYPE refit_queue_jobs gauge
refit_queue_jobs{queue="training",state="waiting"} 0
`

export const SWEEP_ID = 'sweep-7h3k9d2m4n6p8q0r1s3t5v7w'

export const sweepExample = {
  id: SWEEP_ID,
  object: 'fine_tuning.sweep',
  created_at: T,
  finished_at: null,
  status: 'running',
  model: 'mnist-cnn',
  training_file: FILE_ID,
  validation_file: null,
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
  early_termination: { type: 'asha', min_epochs: 1, reduction_factor: 2 },
  baseline_trial: true,
  baseline: { trial: 0, values: { 'hyperparameters.learning_rate': 0.001, 'head.hidden_units': 128 } },
  keep_all_models: false,
  seed: 7,
  suffix: null,
  metadata: null,
  status_reason: null,
  progress: { trials_total: 8, trials_created: 3, trials_done: 1, trials_succeeded: 1 },
  best_trial: {
    trial: 1,
    job_id: JOB_ID,
    values: { 'hyperparameters.learning_rate': 0.00231, 'head.hidden_units': 128 },
    metric_value: 0.9712,
  },
  best_model: MODEL_ID,
}

export const trialExample = {
  object: 'fine_tuning.sweep.trial',
  trial: 1,
  values: { 'hyperparameters.learning_rate': 0.00231, 'head.hidden_units': 128 },
  metric_value: 0.9712,
  baseline: false,
  job: jobExample,
}

export const sweepEventExample = {
  id: 'swevent-2k4m6n8p0q1r3s5t7v9w1x3y',
  object: 'fine_tuning.sweep.event',
  created_at: T + 40,
  level: 'info',
  type: 'trial_ended',
  message: 'Trial 1 succeeded: val_accuracy 0.9712',
  data: {
    trial: 0,
    job_id: JOB_ID,
    status: 'succeeded',
    status_reason: null,
    metric: 'val_accuracy',
    metric_value: 0.9712,
  },
}

export const sweepEventStreamExample = `retry: 2000

id: 12
event: event
data: ${JSON.stringify(sweepEventExample)}

event: sweep
data: {"id":"${SWEEP_ID}","object":"fine_tuning.sweep","status":"running","progress":{"trials_total":8,"trials_created":3,"trials_done":1,"trials_succeeded":1}}

event: done
data: {"status":"succeeded","best_model":"${MODEL_ID}"}
`
