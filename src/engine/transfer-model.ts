// Transfer learning, model side: the backbone cut at the feature layer, the new head, and the whole
// model (raw input -> backbone layers -> head) composed from the very same layer objects.
import { EngineError } from './errors.js'
import type { LayersModel, Tf } from './tf.js'

type SymbolicTensor = LayersModel['outputs'][number]
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

/** dense 128 relu -> dropout 0.5 -> dense `numClasses` softmax on `featureDim` inputs, initializers seeded. */
export function buildHead(
  tf: Tf,
  base: LayersModel,
  featureDim: number,
  numClasses: number,
  seed: number,
  learningRate: number,
): Head {
  const layers = [
    tf.layers.dense({
      name: freeName(base, 'head_dense'),
      units: 128,
      activation: 'relu',
      kernelInitializer: tf.initializers.glorotUniform({ seed }),
    }),
    // unseeded on purpose: a seeded tfjs Dropout reuses the same mask on every call
    tf.layers.dropout({ name: freeName(base, 'head_dropout'), rate: 0.5 }),
    tf.layers.dense({
      name: freeName(base, 'head_output'),
      units: numClasses,
      activation: 'softmax',
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
    }),
  ]
  const input = tf.input({ shape: [featureDim], name: freeName(base, 'head_input') })
  let x: SymbolicTensor = input
  for (const l of layers) x = l.apply(x) as SymbolicTensor
  const model = tf.model({ inputs: input, outputs: x, name: 'head' })
  model.compile({ optimizer: tf.train.adam(learningRate), loss: 'categoricalCrossentropy', metrics: ['accuracy'] })
  return { model, layers }
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
