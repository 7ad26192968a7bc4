// A model fine-tuned on a TF.js graph-model base, stored as one TF.js graph model: the base graph up to its
// feature node (its nodes and weight entries copied as they are, quantized or not) with the trained head
// appended as graph nodes, so stock `tf.loadGraphModel` runs it and the service compiles it like any graph
// model (graph-model.ts). The head's layers become:
//
//   (feature node) -> Reshape [-1, features]
//   Dense            -> MatMul -> BiasAdd (-> Relu | Relu6 | Elu | Selu | Sigmoid | Tanh | Softmax)
//   Dropout          -> nothing (inference)
//   last node        -> Identity `refit_head/probabilities` (the graph's only output)
import type { io } from '@tensorflow/tfjs'
import { EngineError } from '../errors.js'
import type { LayersModel } from '../tf.js'
import { baseName, type GraphModelJson, type JsonNode, needed } from './graph-model.js'

/** Prefix of every node the head adds (the base graph's names never start with it after conversion). */
export const HEAD_SCOPE = 'refit_head'
/** The output node of a graph model with a trained head. */
export const HEAD_OUTPUT = `${HEAD_SCOPE}/probabilities`

const ACTIVATION_OPS: Record<string, string | null> = {
  linear: null,
  relu: 'Relu',
  relu6: 'Relu6',
  elu: 'Elu',
  selu: 'Selu',
  sigmoid: 'Sigmoid',
  tanh: 'Tanh',
  softmax: 'Softmax',
}

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 }

/** Bytes one manifest entry takes in the weights buffer (quantized entries at their stored width). */
function entryBytes(w: io.WeightsManifestEntry): number {
  const n = (w.shape as number[]).reduce((a, b) => a * b, 1)
  const per = BYTES[w.quantization?.dtype ?? w.dtype]
  if (per === undefined) throw new Error(`weight ${w.name}: dtype ${w.quantization?.dtype ?? w.dtype} is not supported`)
  return n * per
}

const b64 = (s: string) => Buffer.from(s).toString('base64')
const dimsOf = (shape: number[]) => ({ dim: shape.map((d) => ({ size: String(d) })) })
const FLOAT = { type: 'DT_FLOAT' }

/**
 * The base graph model (`json` + its concatenated `weights`) cut at `featureNode`, followed by `head` (a
 * LayersModel of Dense and Dropout layers taking the feature vector). Returns model.json (one weights group,
 * `./weights.bin`) and the new weights buffer.
 */
export function graphModelWithHead(
  json: GraphModelJson,
  weights: Uint8Array,
  featureNode: string,
  head: LayersModel,
): { modelJson: GraphModelJson; weights: Buffer } {
  const nodes: JsonNode[] = needed(json.modelTopology.node, featureNode).map((n) => ({ ...n }))
  if (!nodes.some((n) => n.name === featureNode)) throw new Error(`the graph has no node named ${featureNode}`)
  const keep = new Set(nodes.filter((n) => n.op === 'Const').map((n) => n.name))
  const specs: io.WeightsManifestEntry[] = []
  const parts: Uint8Array[] = []
  let offset = 0
  for (const w of json.weightsManifest.flatMap((g) => g.weights)) {
    const size = entryBytes(w)
    if (keep.has(w.name)) {
      specs.push(w)
      parts.push(weights.subarray(offset, offset + size))
    }
    offset += size
  }
  if (offset !== weights.byteLength)
    throw new Error(`the weights hold ${weights.byteLength} bytes, the manifest ${offset}`)
  const names = new Set(nodes.map((n) => n.name))
  const add = (n: JsonNode) => {
    if (names.has(n.name)) throw new Error(`the base graph already has a node named ${n.name}`)
    names.add(n.name)
    nodes.push(n)
    return n.name
  }
  const constant = (name: string, values: Float32Array | Int32Array, shape: number[]) => {
    const dtype = values instanceof Int32Array ? 'int32' : 'float32'
    specs.push({ name, shape, dtype })
    parts.push(new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
    const type = dtype === 'int32' ? 'DT_INT32' : 'DT_FLOAT'
    return add({
      name,
      op: 'Const',
      attr: { value: { tensor: { dtype: type, tensorShape: dimsOf(shape) } }, dtype: { type } },
    })
  }
  const inputShape = head.inputs[0].shape
  const features = Number(inputShape[inputShape.length - 1])
  let x = add({
    name: `${HEAD_SCOPE}/features`,
    op: 'Reshape',
    input: [baseName(featureNode), constant(`${HEAD_SCOPE}/features/shape`, Int32Array.from([-1, features]), [2])],
    attr: { T: FLOAT, Tshape: { type: 'DT_INT32' } },
  })
  for (const layer of head.layers) {
    const cls = layer.getClassName()
    if (cls === 'InputLayer' || /Dropout$/.test(cls)) continue
    if (cls !== 'Dense')
      throw new EngineError(
        'base_model_not_transferable',
        `head layer ${layer.name} (${cls}) has no graph translation`,
        true,
      )
    const config = layer.getConfig() as { activation?: string; useBias?: boolean }
    const act = config.activation ?? 'linear'
    if (!(act in ACTIVATION_OPS))
      throw new EngineError(
        'base_model_not_transferable',
        `head layer ${layer.name}: activation ${act} has no graph op`,
        true,
      )
    const [kernel, bias] = layer.getWeights()
    const scope = `${HEAD_SCOPE}/${layer.name}`
    const k = constant(`${scope}/kernel`, Float32Array.from(kernel.dataSync()), kernel.shape as number[])
    x = add({
      name: `${scope}/MatMul`,
      op: 'MatMul',
      input: [x, k],
      attr: { T: FLOAT, transpose_a: { b: false }, transpose_b: { b: false } },
    })
    if (bias && config.useBias !== false) {
      const b = constant(`${scope}/bias`, Float32Array.from(bias.dataSync()), bias.shape as number[])
      x = add({
        name: `${scope}/BiasAdd`,
        op: 'BiasAdd',
        input: [x, b],
        attr: { T: FLOAT, data_format: { s: b64('NHWC') } },
      })
    }
    const op = ACTIVATION_OPS[act]
    if (op) x = add({ name: `${scope}/${op}`, op, input: [x], attr: { T: FLOAT } })
  }
  add({ name: HEAD_OUTPUT, op: 'Identity', input: [x], attr: { T: FLOAT } })
  const modelJson: GraphModelJson & Record<string, unknown> = {
    format: 'graph-model',
    generatedBy: (json as { generatedBy?: string }).generatedBy,
    convertedBy: 'Refit (TF.js graph model + trained head)',
    modelTopology: { node: nodes, ...(json.modelTopology.versions ? { versions: json.modelTopology.versions } : {}) },
    weightsManifest: [{ paths: ['./weights.bin'], weights: specs }],
  }
  return { modelJson, weights: Buffer.concat(parts) }
}
