// A whole model (raw preprocessed input -> class probabilities) as a frozen TensorFlow SavedModel for
// `GET /v1/models/{id}/content?format=saved_model`: the compile path of the frozen forward passes
// (compile.ts) applied to the entire network, weights as Const nodes, one `serving_default` signature whose
// input and output keys and shapes are written into the export's metadata.json. TensorFlow (Python
// `tf.saved_model.load`, TensorFlow Serving) and tfjs-node's `tf.node.loadSavedModel` load it.
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { MODEL_JSON, WEIGHTS_BIN } from '../model-io.js'
import type { ModelMetadata } from '../protocol.js'
import type { LayersModel, Tf } from '../tf.js'
import { compileGraph, isUncovered, planGraph, type Uncovered } from './compile.js'
import { type GraphModelJson, graphModelSavedModel, inspectGraphModel, isGraphModelProblem } from './graph-model.js'
import { graphModelContentSha256 } from './graph-model-forward.js'

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

/**
 * A stored TF.js graph model (uploaded, or fine-tuned on a graph-model base: base graph + head nodes) as a
 * SavedModel export: the converter of graph-model.ts up to the model's output, under the export's signature
 * keys. The output width is the number of classes (metadata.json).
 */
export async function exportGraphModelSavedModel(
  tf: Tf,
  dir: string,
  meta: ModelMetadata,
): Promise<SavedModelExport | Uncovered> {
  const [jsonText, weights] = await Promise.all([
    readFile(path.join(dir, MODEL_JSON)),
    readFile(path.join(dir, WEIGHTS_BIN)),
  ])
  const json = JSON.parse(jsonText.toString('utf8')) as GraphModelJson
  const info = inspectGraphModel(json)
  if (isGraphModelProblem(info)) return { layer: info.node, className: info.op, reason: info.reason }
  const classes = meta.classes?.length
  if (!classes) return { layer: null, className: null, reason: 'the model has no class names' }
  const inShape = meta.input_shape ?? info.input.shape
  const savedModel = graphModelSavedModel(
    tf,
    json,
    weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength) as ArrayBuffer,
    {
      outputShape: [classes],
      keys: { input: SAVED_MODEL_SIGNATURE.input, output: SAVED_MODEL_SIGNATURE.output },
    },
  )
  return {
    savedModel,
    saved_model: {
      format: 'saved_model',
      tags: [...SAVED_MODEL_SIGNATURE.tags],
      signature: SAVED_MODEL_SIGNATURE.name,
      inputs: [{ name: SAVED_MODEL_SIGNATURE.input, dtype: 'float32', shape: [-1, ...inShape] }],
      outputs: [{ name: SAVED_MODEL_SIGNATURE.output, dtype: 'float32', shape: [-1, classes] }],
      graph_sha256: graphModelContentSha256(jsonText, weights, null),
    },
  }
}
