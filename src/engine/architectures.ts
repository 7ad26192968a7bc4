// Model presets trained from scratch (supervised, or as a distillation student), sized from the training
// file: input shape from its samples, output units from its classes. Every initializer is seeded and every
// layer named, so the same seed builds the same weights and a checkpoint's weights map back by name.
import { dropoutLayer } from './dropout.js'
import type { ArchitectureId } from './protocol.js'
import type { LayersModel, Tf } from './tf.js'

/** Which samples a preset takes. */
export type ArchitectureInput = 'image' | 'tabular' | 'any'

/** A preset: what it is, what it takes, and how to build it. */
export interface Architecture {
  id: ArchitectureId
  description: string
  inputs: ArchitectureInput
  build: (tf: Tf, inputShape: number[], numClasses: number, seed: number) => LayersModel
}

type SymbolicTensor = LayersModel['outputs'][number]

function denseStack(tf: Tf, inputShape: number[], numClasses: number, seed: number, hidden: number[], rate: number) {
  const input = tf.input({ shape: inputShape, name: 'input' })
  let x: SymbolicTensor = input
  if (inputShape.length > 1) x = tf.layers.flatten({ name: 'flatten' }).apply(x) as SymbolicTensor
  hidden.forEach((units, i) => {
    x = tf.layers
      .dense({
        name: `dense_${i + 1}`,
        units,
        activation: 'relu',
        kernelInitializer: tf.initializers.heNormal({ seed: seed + i + 1 }),
      })
      .apply(x) as SymbolicTensor
    x = dropoutLayer(tf, { rate, name: `dropout_${i + 1}` }).apply(x) as SymbolicTensor
  })
  const out = tf.layers
    .dense({
      name: 'predictions',
      units: numClasses,
      activation: 'softmax',
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 100 }),
    })
    .apply(x) as SymbolicTensor
  return { input, out }
}

function mlp(hidden: number[], rate: number) {
  return (tf: Tf, inputShape: number[], numClasses: number, seed: number): LayersModel => {
    const { input, out } = denseStack(tf, inputShape, numClasses, seed, hidden, rate)
    return tf.model({ inputs: input, outputs: out, name: 'mlp' })
  }
}

/** conv blocks: each is a list of filter counts (3x3 same-padded relu convs) followed by 2x2 max pooling. */
function cnn(blocks: number[][], dense: number, rate: number, convDropout: number) {
  return (tf: Tf, inputShape: number[], numClasses: number, seed: number): LayersModel => {
    if (inputShape.length !== 3) throw new Error(`a CNN needs image input [h, w, c], got [${inputShape}]`)
    const input = tf.input({ shape: inputShape, name: 'input' })
    let x: SymbolicTensor = input
    let s = seed
    blocks.forEach((filters, b) => {
      filters.forEach((f, i) => {
        x = tf.layers
          .conv2d({
            name: `block${b + 1}_conv${i + 1}`,
            filters: f,
            kernelSize: 3,
            padding: 'same',
            activation: 'relu',
            kernelInitializer: tf.initializers.heNormal({ seed: ++s }),
          })
          .apply(x) as SymbolicTensor
      })
      x = tf.layers.maxPooling2d({ name: `block${b + 1}_pool`, poolSize: 2 }).apply(x) as SymbolicTensor
      if (convDropout > 0)
        x = dropoutLayer(tf, { rate: convDropout, name: `block${b + 1}_dropout` }).apply(x) as SymbolicTensor
    })
    x = tf.layers.flatten({ name: 'flatten' }).apply(x) as SymbolicTensor
    x = tf.layers
      .dense({
        name: 'dense_1',
        units: dense,
        activation: 'relu',
        kernelInitializer: tf.initializers.heNormal({ seed: ++s }),
      })
      .apply(x) as SymbolicTensor
    x = dropoutLayer(tf, { rate, name: 'dropout_1' }).apply(x) as SymbolicTensor
    const out = tf.layers
      .dense({
        name: 'predictions',
        units: numClasses,
        activation: 'softmax',
        kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 100 }),
      })
      .apply(x) as SymbolicTensor
    return tf.model({ inputs: input, outputs: out, name: 'cnn' })
  }
}

/** The presets a job can name as `architecture`. */
export const ARCHITECTURES: readonly Architecture[] = [
  {
    id: 'mlp-small',
    description: 'MLP: flatten -> dense 128 relu -> dropout 0.2 -> softmax; any input',
    inputs: 'any',
    build: mlp([128], 0.2),
  },
  {
    id: 'mlp-large',
    description:
      'MLP: flatten -> 2 x (dense 800 relu -> dropout 0.5) -> softmax (the 784-800-800-10 of Hinton et al.); any input',
    inputs: 'any',
    build: mlp([800, 800], 0.5),
  },
  {
    id: 'cnn-small',
    description: 'CNN: conv 16 -> pool -> conv 32 -> pool -> dense 64 -> dropout 0.3 -> softmax; images',
    inputs: 'image',
    build: cnn([[16], [32]], 64, 0.3, 0),
  },
  {
    id: 'cnn-large',
    description:
      'CNN: 2 x conv 32 -> pool -> 2 x conv 64 -> pool (dropout 0.25 each) -> dense 256 -> dropout 0.5 -> softmax; images',
    inputs: 'image',
    build: cnn(
      [
        [32, 32],
        [64, 64],
      ],
      256,
      0.5,
      0.25,
    ),
  },
]

export function findArchitecture(id: string): Architecture | undefined {
  return ARCHITECTURES.find((a) => a.id === id)
}
