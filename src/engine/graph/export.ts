// A whole model (raw preprocessed input -> class probabilities) as a frozen TensorFlow SavedModel for
// `GET /v1/models/{id}/content?format=saved_model`: the compile path of the frozen forward passes
// (compile.ts) applied to the entire network, weights as Const nodes, one `serving_default` signature whose
// input and output keys and shapes are written into the export's metadata.json. TensorFlow (Python
// `tf.saved_model.load`, TensorFlow Serving) and tfjs-node's `tf.node.loadSavedModel` load it.
import type { ModelMetadata } from '../protocol.js'
import type { LayersModel } from '../tf.js'
import { compileGraph, isUncovered, planGraph, type Uncovered } from './compile.js'

/** Signature keys (and node names) of an exported SavedModel. */
export const SAVED_MODEL_SIGNATURE = {
  tags: ['serve'],
  name: 'serving_default',
  input: 'input',
  output: 'probabilities',
} as const

/** What metadata.json of a SavedModel export says about the graph, beside the model's own metadata. */
export interface SavedModelMetadata {
  format: 'saved_model'
  tags: string[]
  signature: string
  /** dtype float32; shape with -1 for the batch; fed after `preprocessing` (as the layers model is) */
  inputs: { name: string; dtype: 'float32'; shape: number[] }[]
  /** class probabilities in the order of `classes` */
  outputs: { name: string; dtype: 'float32'; shape: number[] }[]
  /** sha256 of the compiled part (compiler version, topology, weights) */
  graph_sha256: string
}

/** A SavedModel export: saved_model.pb bytes and the metadata.json block describing its signature. */
export interface SavedModelExport {
  savedModel: Uint8Array
  saved_model: SavedModelMetadata
}

/**
 * Compiles `model` whole into a frozen SavedModel, or says which layer keeps it from freezing. Needs the
 * tfjs-node package (its protobuf classes), not the tensorflow backend: weights are read through any backend.
 */
export function exportSavedModel(model: LayersModel, meta: ModelMetadata): SavedModelExport | Uncovered {
  const plan = planGraph(model)
  if (isUncovered(plan)) return plan
  const inShape = meta.input_shape ?? plan.inputShape
  if (inShape.join('x') !== plan.inputShape.join('x'))
    return {
      layer: null,
      className: null,
      reason: `the model's input shape [${plan.inputShape}] differs from metadata.json's input_shape [${inShape}]`,
    }
  const compiled = compileGraph(plan, { input: SAVED_MODEL_SIGNATURE.input, output: SAVED_MODEL_SIGNATURE.output })
  return {
    savedModel: compiled.savedModel,
    saved_model: {
      format: 'saved_model',
      tags: [...SAVED_MODEL_SIGNATURE.tags],
      signature: SAVED_MODEL_SIGNATURE.name,
      inputs: [{ name: SAVED_MODEL_SIGNATURE.input, dtype: 'float32', shape: [-1, ...compiled.inputShape] }],
      outputs: [{ name: SAVED_MODEL_SIGNATURE.output, dtype: 'float32', shape: [-1, ...compiled.outputShape] }],
      graph_sha256: compiled.contentSha256,
    },
  }
}
