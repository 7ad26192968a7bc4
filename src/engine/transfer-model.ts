// Transfer learning, model side: the backbone cut at the feature layer, the new head, and the whole
// model (raw input -> backbone layers -> head) composed from the very same layer objects.
import { dropoutLayer } from './dropout.js'
import { EngineError } from './errors.js'
import type { ModelMetadata, TransferHead } from './protocol.js'
import type { LayersModel, SymbolicTensor, Tf } from './tf.js'

type Layer = ReturnType<LayersModel['getLayer']>

/** The base model's layers from its input up to `featureLayer`, as a model whose output is the feature tensor. */
export function cutBackbone(
  tf: Tf,
  base: LayersModel,
  featureLayer: string,
): { backbone: LayersModel; features: SymbolicTensor } {
  let layer: Layer
  try {
    layer = base.getLayer(featureLayer)
  } catch {
    throw new EngineError('feature_layer_not_found', `base model has no layer named "${featureLayer}"`, true)
  }
  const features = layer.output
  if (Array.isArray(features)) {
    throw new EngineError('feature_layer_not_found', `feature layer "${featureLayer}" has several outputs`, true)
  }
  const backbone = tf.model({ inputs: base.inputs, outputs: features, name: 'backbone' })
  return { backbone, features }
}

/** The head's layers, in order; `flatten` is set when features are not already a vector. */
export interface Head {
  model: LayersModel
  layers: Layer[]
}

function freeName(base: LayersModel, name: string): string {
  const taken = new Set(base.layers.map((l) => l.name))
  let candidate = name
  for (let i = 1; taken.has(candidate); i++) candidate = `${name}_${i}`
  return candidate
}

/** dense `hidden_units` relu -> dropout -> dense `numClasses` softmax on `featureDim` inputs, initializers seeded. */
export function buildHead(
  tf: Tf,
  base: LayersModel,
  featureDim: number,
  numClasses: number,
  seed: number,
  spec: TransferHead = { hidden_units: 128, dropout: 0.5 },
): Head {
  const layers: Layer[] = []
  if (spec.hidden_units > 0) {
    layers.push(
      tf.layers.dense({
        name: freeName(base, 'head_dense'),
        units: spec.hidden_units,
        activation: 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed }),
      }),
    )
  }
  // masks from the job's generator (dropout.ts): a seeded tfjs Dropout reuses one mask on every call
  if (spec.dropout > 0) layers.push(dropoutLayer(tf, { name: freeName(base, 'head_dropout'), rate: spec.dropout }))
  layers.push(
    tf.layers.dense({
      name: freeName(base, 'head_output'),
      units: numClasses,
      activation: 'softmax',
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
    }),
  )
  const input = tf.input({ shape: [featureDim], name: freeName(base, 'head_input') })
  let x: SymbolicTensor = input
  for (const l of layers) x = l.apply(x) as SymbolicTensor
  const model = tf.model({ inputs: input, outputs: x, name: 'head' })
  return { model, layers }
}

/** Blocks of a backbone, bottom to top: metadata `blocks`, else derived from layer names and kinds. */
export function backboneBlocks(base: LayersModel, meta: ModelMetadata): { name: string; layers: string[] }[] {
  if (meta.blocks && meta.blocks.length > 0) return meta.blocks
  const featureIndex = base.layers.findIndex((l) => l.name === meta.feature_layer)
  const below = base.layers.slice(0, featureIndex >= 0 ? featureIndex + 1 : base.layers.length)
  const grouped = new Map<string, string[]>()
  for (const l of below) {
    const m = /^(block_\d+)_/.exec(l.name)
    if (m) grouped.set(m[1], [...(grouped.get(m[1]) ?? []), l.name])
  }
  if (grouped.size > 0) return [...grouped].map(([name, layers]) => ({ name, layers }))
  // otherwise each layer with weights is a block
  return below.filter((l) => l.weights.length > 0).map((l) => ({ name: l.name, layers: [l.name] }))
}

/**
 * raw input -> base layers up to the feature layer -> (flatten) -> head layers, as one LayersModel. The
 * layers are shared with `base` and `head`, so the backbone's weights are the base's, unchanged.
 */
export function composeWholeModel(tf: Tf, base: LayersModel, features: SymbolicTensor, head: Head): LayersModel {
  let x = features
  if (x.shape.length > 2) x = tf.layers.flatten({ name: freeName(base, 'head_flatten') }).apply(x) as SymbolicTensor
  for (const l of head.layers) x = l.apply(x) as SymbolicTensor
  return tf.model({ inputs: base.inputs, outputs: x, name: 'refit_transfer' })
}
