// The contract between the API's inference pool (or the worker's evaluation processor) and an inference
// process. The inference process runs TensorFlow.js and sharp only: it never touches PostgreSQL or Redis,
// it reads model directories and dataset files, and answers over the IPC channel (advanced serialization,
// so typed arrays travel as bytes, not JSON).
import type { DatasetFormat, DatasetOptions } from '../datasets/types.js'
import type { SavedModelMetadata } from '../engine/graph/export.js'
import type { BackendName, Evaluation, GraphSettings } from '../engine/protocol.js'
import type { ErrorDetail } from '../errors.js'

/** Raw samples of one predictions request, already checked for type and size by the API. */
export type RawInputs =
  | { kind: 'image' /** PNG or JPEG bytes, one per input */; images: Uint8Array[] }
  | { kind: 'tabular' /** rows * features values, row-major */; features: Float32Array; rows: number }

/** A model the process may hold in its cache: `key` changes whenever the stored weights change. */
export interface ModelRef {
  key: string
  dir: string
}

/** First message: choose and self-test the backend, size the cache. */
export interface InitRequest {
  type: 'init'
  backend: BackendName | 'auto'
  cacheBytes: number
  /** whole models as TensorFlow graphs (engine/graph/forward.ts); absent: the engine's default */
  graph?: GraphSettings
  /** INFERENCE_MEMORY_BYTES (0: none): a model whose graph compile would outgrow it stays eager */
  memoryLimitBytes?: number
}

export interface PredictRequest {
  type: 'predict'
  id: number
  model: ModelRef
  inputs: RawInputs
}

/** Compile a cached model whole into a frozen SavedModel (engine/graph/export.ts). */
export interface ExportRequest {
  type: 'export'
  id: number
  model: ModelRef
}

/** Drop cached models whose key starts with `keyPrefix` (a deleted model). */
export interface EvictRequest {
  type: 'evict'
  keyPrefix: string
}

/** Score a model on a labelled dataset file, then exit (one evaluation per process). */
export interface EvaluateRequest {
  type: 'evaluate'
  modelDir: string
  dataset: { path: string; format: DatasetFormat; options?: DatasetOptions }
  backend: BackendName | 'auto'
  /** samples per forward pass */
  batchSize?: number
  /** the whole model as a TensorFlow graph when it can (engine/graph/forward.ts) */
  graph?: GraphSettings
}

export type InferenceParentMessage = InitRequest | PredictRequest | ExportRequest | EvictRequest | EvaluateRequest

export type InferenceChildMessage =
  | { type: 'ready'; backend: BackendName; selfTestMs: number }
  | {
      type: 'result'
      id: number
      /** rows * classes probabilities, row-major */
      probs: Float32Array
      classes: number
      /** which path computed them: the compiled TensorFlow graph or the LayersModel op by op */
      forward: 'graph' | 'eager'
      /** model keys held in the cache after this request (the pool routes by it) */
      held: string[]
      ms: number
    }
  | {
      type: 'exported'
      id: number
      /** saved_model.pb */
      savedModel: Uint8Array
      saved_model: SavedModelMetadata
      held: string[]
      ms: number
    }
  | {
      type: 'failed'
      id: number
      /** model_not_freezable: an export whose model has a layer the graph compiler does not translate */
      code: 'invalid_input' | 'inference_failed' | 'model_not_freezable'
      message: string
      details?: ErrorDetail[]
    }
  | { type: 'evaluated'; backend: BackendName; evaluation: Evaluation; ms: number }
  | { type: 'fatal'; code: string; message: string; permanent: boolean }
