// The contract between the worker process (BullMQ, database, queue) and the training process it forks
// for each job (TensorFlow.js only). The training process never touches PostgreSQL or Redis: it reads
// files, writes artifacts under `outputDir`, and reports everything as messages over the IPC channel.
import type { DatasetFormat, DatasetOptions } from '../datasets/types.js'

/** How frozen forward passes run (src/engine/graph/): part of every request that runs one. */
export interface GraphSettings {
  /** `auto`: graph wherever possible; `off`: always eager */
  mode: 'auto' | 'off'
  /** on-disk cache of compiled graphs shared by processes; null = a private temp directory per compile */
  cacheDir: string | null
  /** on-disk cache budget; least recently used graphs beyond it are removed */
  cacheBytes: number
}

export type BackendName = 'tensorflow' | 'wasm' | 'cpu'

/** How a base model's raw input becomes the tensor it expects. Stored in model metadata. */
export interface Preprocessing {
  /** `x * scale + offset` per channel value after resizing; e.g. scale 1/255 offset 0 */
  scale: number
  offset: number
  /** resize images to the model's input height/width (bilinear) */
  resize: boolean
  /** images: repeat a single channel to 3 when the model wants RGB, average to 1 when it wants gray */
  channels: 'as_model'
  /** tabular: per-feature standardization statistics learned from the training data */
  standardize?: { mean: number[]; std: number[] }
  /**
   * presets trained on images: the training images were scaled down (aspect kept) to fit this many pixels
   * on each side before the network was sized, so `input_shape` is at most this; inputs are resized to it
   */
  max_image_side?: number
}

/** What a model directory holds next to model.json and weights.bin, as metadata.json. */
export interface ModelMetadata {
  /** input shape without batch dimension, e.g. [28, 28, 1] */
  input_shape: number[]
  preprocessing: Preprocessing
  /** class names in output order; null for a backbone whose head is replaced */
  classes: string[] | null
  /** layer whose output is the feature vector a new head is trained on */
  feature_layer: string | null
  /**
   * backbone blocks, bottom to top, each a list of layer names: `unfreeze_top_blocks: N` trains the last N
   * in a transfer job's fine_tune phase
   */
  blocks?: { name: string; layers: string[] }[]
  description?: string
  [key: string]: unknown
}

/** Optimizer used for training; default `adam`. */
export type OptimizerName = 'adam' | 'sgd' | 'rmsprop'

/** Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs; best weights are restored. */
export interface EarlyStopping {
  patience: number
  min_delta: number
  monitor: 'val_loss' | 'val_accuracy'
}

/** Resolved hyperparameters (numbers, never "auto": the API resolves them). */
export interface TrainHyperparameters {
  n_epochs: number
  batch_size: number
  learning_rate: number
  validation_split: number
  /** default adam */
  optimizer?: OptimizerName
  early_stopping?: EarlyStopping | null
}

/** Identifier of a model preset trained from scratch (see architectures.ts). */
export type ArchitectureId = 'mlp-small' | 'mlp-large' | 'cnn-small' | 'cnn-large'

/** The new classification head of a transfer job. */
export interface TransferHead {
  hidden_units: number
  dropout: number
}

/** How a job trains. */
export type MethodSpec =
  | {
      type: 'transfer'
      /** default { hidden_units: 128, dropout: 0.5 } */
      head?: TransferHead
      /** top backbone blocks (see the base model's metadata `blocks`) trained in the `fine_tune` phase; default 0 */
      unfreeze_top_blocks?: number
      /** second phase: head + unfrozen blocks trained together at this (lower) learning rate */
      fine_tune?: { n_epochs: number; learning_rate: number } | null
    }
  | { type: 'supervised' }
  | {
      type: 'distillation'
      /** any model directory (built-in, uploaded or fine-tuned) whose classes equal the training file's */
      teacherModelDir: string
      /** the teacher's model id, recorded as the distilled model's `distillation.teacher` (its lineage) */
      teacherModelId?: string | null
      temperature: number
      /** weight of the soft (teacher) loss; 1 - alpha weighs the hard-label loss */
      alpha: number
    }

/** Sent once by the worker to the training process. */
export interface TrainRequest {
  type: 'train'
  jobId: string
  method: MethodSpec
  /** the model to train: transfer: the backbone; supervised: all its layers; distillation: the student */
  baseModelDir?: string
  /** instead of baseModelDir: a preset trained from scratch (supervised, or the distillation student) */
  architecture?: ArchitectureId
  /** id of the base model (built-in id or model id), recorded as `base_model` in the output metadata */
  baseModelId?: string
  training: { path: string; format: DatasetFormat; options?: DatasetOptions }
  validation?: { path: string; format: DatasetFormat; options?: DatasetOptions }
  hyperparameters: TrainHyperparameters
  seed: number
  /** continue this job from one of its checkpoints (epoch numbering continues) */
  resumeFrom?: { checkpointDir: string }
  /** start a new job from another job's checkpoint weights */
  initFrom?: { checkpointDir: string }
  /** artifacts go here: checkpoints/epoch-N/ and model/ */
  outputDir: string
  /** 'auto' picks tensorflow, else wasm, else cpu, each proven by a self-test */
  backend: BackendName | 'auto'
  /** transfer jobs: the feature cache across jobs, per dataset (absent: no cache, e.g. FEATURE_CACHE_BYTES=0) */
  featureCache?: { training: FeatureCacheSlot; validation?: FeatureCacheSlot }
  /** frozen forward passes as TensorFlow graphs (graph/forward.ts); default auto without a disk cache */
  graph?: GraphSettings
  /**
   * a sweep trial: after `done`, a process that holds nothing of the job (tensors, sessions) says `idle` and
   * waits for the next trial of its sweep instead of exiting (workers/training-processes.ts)
   */
  keepAlive?: boolean
}

/** One dataset's place in the feature cache (src/modules/features owns the entries). */
export interface FeatureCacheSlot {
  /** a local copy of the cached features and the sha256 its bytes must have; null: nothing cached */
  cached: { path: string; sha256: string } | null
  /** where the training process writes features it computes, for the worker to store */
  writePath: string
}

/**
 * Sent by the worker to stop training at the end of the current batch. `jobId`: a kept process ignores one
 * that crossed its `idle` for the job it just finished (it may come before the next job's `train`, and holds).
 */
export interface CancelRequest {
  type: 'cancel'
  jobId?: string
}

/** Sent by the worker to pause: a mid-epoch checkpoint at the end of the current batch, then stop. */
export interface PauseRequest {
  type: 'pause'
  jobId?: string
}

/** Sent instead of `train` when the worker starts: pick and self-test the backend, report it, exit. */
export interface ProbeRequest {
  type: 'probe'
  backend: BackendName | 'auto'
}

export type ParentMessage = TrainRequest | CancelRequest | PauseRequest | ProbeRequest

export interface EpochMetrics {
  loss: number
  accuracy: number
  val_loss?: number
  val_accuracy?: number
}

export interface Evaluation {
  loss: number
  accuracy: number
  samples: number
  classes: string[]
  per_class: { class: string; precision: number; recall: number; support: number }[]
  /** confusion[i][j]: true class i predicted as j */
  confusion_matrix: number[][]
  /** up to 50 misclassified samples, most confident first; `index` is the sample's index in its dataset */
  misclassified?: { index: number; true: string; predicted: string; probability: number }[]
}

/** Messages from the training process, in order: backend, (event | progress | batch | epoch | checkpoint)*, then done or error. */
export type ChildMessage =
  | { type: 'backend'; backend: BackendName; selfTest: { maxForwardDiff: number; maxGradDiff: number; ms: number } }
  | { type: 'event'; level: 'info' | 'warn' | 'error'; message: string; data?: Record<string, unknown> }
  | {
      type: 'progress'
      epoch: number
      totalEpochs: number
      step: number
      totalSteps: number
      samplesPerSecond: number
    }
  /** one batch's loss and accuracy, every BATCH_REPORT_EVERY steps, for live per-step curves */
  | { type: 'batch'; epoch: number; step: number; loss: number; accuracy: number }
  | { type: 'epoch'; epoch: number; step: number; metrics: EpochMetrics }
  | {
      type: 'checkpoint'
      epoch: number
      step: number
      /** a whole model (model.json, weights.bin, metadata.json) plus optimizer.json/.bin and state.json */
      dir: string
      /** mid-epoch (a pause): the epoch's metrics so far */
      metrics: EpochMetrics
      /** written by a pause in the middle of epoch `epoch` (state.json records its place in the epoch) */
      midEpoch?: boolean
    }
  | {
      type: 'done'
      /** directory of the whole fine-tuned model (raw input to classes) with metadata.json; '' when cancelled */
      modelDir: string
      evaluation: Evaluation | null
      trainedSamples: number
      /** true when stopped by a cancel or pause request */
      cancelled: boolean
      /** true when stopped by a pause, after its mid-epoch checkpoint */
      paused?: boolean
      /** with early stopping: the epoch whose weights were restored and saved; else null */
      bestEpoch: number | null
    }
  | { type: 'error'; code: string; message: string; permanent: boolean }
  /** features computed for a dataset, written to its FeatureCacheSlot.writePath */
  | { type: 'features'; which: 'training' | 'validation'; path: string; sha256: string; bytes: number; rows: number }
  /** the cached features of a dataset did not verify (sha256, format): never used, the entry must go */
  | { type: 'features_corrupt'; which: 'training' | 'validation'; reason: string }
  /** after `done` of a keepAlive request: the process is clean and waits for another `train` */
  | { type: 'idle' }
