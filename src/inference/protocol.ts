// The contract between the API's inference pool (or the worker's evaluation processor) and an inference
// process. The inference process runs TensorFlow.js and sharp only: it never touches PostgreSQL or Redis,
// it reads model directories and dataset files, and answers over the IPC channel. The pool's channel is
// JSON, with bytes and float arrays as base64 (Wire* types; encode/decode below): per message, node's
// 'advanced' serialization cost about twice the CPU of JSON on each side (scratch IPC round trips of a
// batch-1 prediction: 72-95 vs 36 us in the API, 66-81 vs 36 us in the child). The evaluation processor's
// channel stays 'advanced'; its messages carry no typed arrays.
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

/** RawInputs on the pool's JSON channel: each image's bytes, and the rows' float32 bytes, in base64. */
export type WireInputs =
  | { kind: 'image'; images: string[] }
  | { kind: 'tabular' /** float32 little-endian, rows * features */; features: string; rows: number }

export interface PredictRequest {
  type: 'predict'
  id: number
  model: ModelRef
  inputs: WireInputs
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
      /** rows * classes probabilities, row-major, float32 little-endian in base64 (decodeFloats) */
      probs: string
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
      /** saved_model.pb, base64 */
      savedModel: string
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

/** Bytes as base64 for the JSON channel (no copy of the bytes). */
export function encodeBytes(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64')
}

/** Base64 back to bytes (a view of a fresh buffer). */
export function decodeBytes(s: string): Uint8Array {
  const b = Buffer.from(s, 'base64')
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
}

/** Float32 values as base64 of their bytes: exact, NaN and infinities included. */
export function encodeFloats(f: Float32Array): string {
  return Buffer.from(f.buffer, f.byteOffset, f.byteLength).toString('base64')
}

/** Base64 of float32 bytes back to a Float32Array (copied: the decoded buffer need not be 4-byte aligned). */
export function decodeFloats(s: string): Float32Array {
  const b = Buffer.from(s, 'base64')
  const out = new Float32Array(b.byteLength >> 2)
  new Uint8Array(out.buffer).set(b.subarray(0, out.length * 4))
  return out
}

/** RawInputs as the pool sends them. */
export function encodeInputs(inputs: RawInputs): WireInputs {
  return inputs.kind === 'image'
    ? { kind: 'image', images: inputs.images.map(encodeBytes) }
    : { kind: 'tabular', features: encodeFloats(inputs.features), rows: inputs.rows }
}

/** WireInputs as the inference process computes on them. */
export function decodeInputs(inputs: WireInputs): RawInputs {
  return inputs.kind === 'image'
    ? { kind: 'image', images: inputs.images.map(decodeBytes) }
    : { kind: 'tabular', features: decodeFloats(inputs.features), rows: inputs.rows }
}
