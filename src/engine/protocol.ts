// The contract between the worker process (BullMQ, database, queue) and the training process it forks
// for each job (TensorFlow.js only). The training process never touches PostgreSQL or Redis: it reads
// files, writes artifacts under `outputDir`, and reports everything as messages over the IPC channel.
import type { DatasetFormat, DatasetOptions } from '../datasets/types.js'

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
  /** how many layers (from the input) form the frozen backbone, inclusive of feature_layer */
  description?: string
  [key: string]: unknown
}

export interface TransferHyperparameters {
  n_epochs: number
  batch_size: number
  learning_rate: number
  validation_split: number
}

/** Sent once by the worker to the training process. */
export interface TrainRequest {
  type: 'train'
  jobId: string
  method: { type: 'transfer' }
  /** directory with model.json, weights.bin, metadata.json of the base model */
  baseModelDir: string
  /** id of the base model (built-in id or model id), recorded as `base_model` in the output metadata */
  baseModelId?: string
  training: { path: string; format: DatasetFormat; options?: DatasetOptions }
  validation?: { path: string; format: DatasetFormat; options?: DatasetOptions }
  hyperparameters: TransferHyperparameters
  seed: number
  /** artifacts go here: checkpoints/epoch-N/ and model/ */
  outputDir: string
  /** 'auto' picks tensorflow, else wasm, else cpu, each proven by a self-test */
  backend: BackendName | 'auto'
}

/** Sent by the worker to stop training at the end of the current batch. */
export interface CancelRequest {
  type: 'cancel'
}

/** Sent instead of `train` when the worker starts: pick and self-test the backend, report it, exit. */
export interface ProbeRequest {
  type: 'probe'
  backend: BackendName | 'auto'
}

export type ParentMessage = TrainRequest | CancelRequest | ProbeRequest

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
}

/** Messages from the training process, in order: backend, (event | progress | epoch | checkpoint)*, then done or error. */
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
  | { type: 'epoch'; epoch: number; step: number; metrics: EpochMetrics }
  | { type: 'checkpoint'; epoch: number; step: number; dir: string; metrics: EpochMetrics }
  | {
      type: 'done'
      /** directory of the whole fine-tuned model (raw input to classes) with metadata.json; '' when cancelled */
      modelDir: string
      evaluation: Evaluation | null
      trainedSamples: number
      /** true when stopped by a cancel request */
      cancelled: boolean
    }
  | { type: 'error'; code: string; message: string; permanent: boolean }
