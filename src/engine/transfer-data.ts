// Transfer learning, data side: bottleneck features computed once by the frozen backbone, the
// train/validation split, and batches of cached features.
import type { LoadedDataset } from '../datasets/types.js'
import { incompatible } from './errors.js'
import { type FrozenForward, forwardRows } from './graph/forward.js'
import { checkCompatible, preprocessRows, rowRange } from './preprocess.js'
import type { Preprocessing } from './protocol.js'
import { shuffledIndices } from './random.js'
import type { LayersModel, Tensor, Tf } from './tf.js'

/** Features of `rows` samples, flat row-major, `dim` values each, with class indices. Lives on the JS heap. */
export interface FeatureSet {
  features: Float32Array
  labels: Int32Array
  dim: number
  rows: number
}

/**
 * Runs the frozen backbone (`forward`: graph or eager, see graph/forward.ts; inference mode: BatchNorm on its
 * moving statistics, Dropout off) over all samples in batches of `batchSize`. Returns null when `isCancelled`
 * turns true between batches.
 */
export async function extractFeatures(
  tf: Tf,
  forward: FrozenForward,
  ds: LoadedDataset,
  prep: Preprocessing,
  inputShape: number[],
  batchSize: number,
  isCancelled: () => boolean = () => false,
): Promise<FeatureSet | null> {
  checkCompatible(ds, inputShape)
  const dim = forward.outputShape.reduce((a, b) => a * b, 1)
  const features = await forwardRows(
    forward,
    ds.rows,
    batchSize,
    (start, end) =>
      tf.tensor(preprocessRows(ds, rowRange(start, end), prep, inputShape), [end - start, ...inputShape]) as Tensor,
    isCancelled,
  )
  if (!features) return null
  return { features, labels: Int32Array.from(ds.y), dim, rows: ds.rows }
}

/** Rows of `set` in the order of `rows`. */
export function takeRows(set: FeatureSet, rows: ArrayLike<number>): FeatureSet {
  const features = new Float32Array(rows.length * set.dim)
  const labels = new Int32Array(rows.length)
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]
    features.set(set.features.subarray(r * set.dim, (r + 1) * set.dim), i * set.dim)
    labels[i] = set.labels[r]
  }
  return { features, labels, dim: set.dim, rows: rows.length }
}

/** Seeded split: the first `round(n * fraction)` rows of a shuffled order validate, the rest train (at least one). */
export function splitRows(
  n: number,
  fraction: number,
  rng: () => number,
): { train: Int32Array; validation: Int32Array } {
  const order = shuffledIndices(n, rng)
  const nVal = Math.min(Math.max(0, Math.round(n * fraction)), n - 1)
  return { validation: order.slice(0, nVal), train: order.slice(nVal) }
}

/** Re-indexes a validation dataset's labels into the training classes; unknown classes are a bad request. */
export function alignClasses(validation: LoadedDataset, classes: string[]): LoadedDataset {
  const index = new Map(classes.map((c, i) => [c, i]))
  const map = validation.classes.map((c) => {
    const i = index.get(c)
    if (i === undefined) throw incompatible(`validation class "${c}" does not occur in the training data`)
    return i
  })
  return { ...validation, classes: [...classes], y: Int32Array.from(validation.y, (v) => map[v]) }
}

/** A batch of cached features and one-hot labels for `rows` of `set`. Caller disposes. */
export function featureBatch(tf: Tf, set: FeatureSet, rows: ArrayLike<number>, numClasses: number) {
  const sub = takeRows(set, rows)
  return tf.tidy(() => ({
    xs: tf.tensor2d(sub.features, [sub.rows, set.dim]),
    ys: tf.oneHot(tf.tensor1d(sub.labels, 'int32'), numClasses),
  }))
}

/** Class probabilities of `model` for every row of `set`, predicted in batches. */
export async function predictFeatures(
  tf: Tf,
  model: LayersModel,
  set: FeatureSet,
  batchSize: number,
): Promise<Float32Array> {
  const k = (model.outputs[0].shape[1] as number) ?? 0
  const out = new Float32Array(set.rows * k)
  for (let start = 0; start < set.rows; start += batchSize) {
    const end = Math.min(set.rows, start + batchSize)
    const probs = tf.tidy(() => {
      const x = tf.tensor2d(set.features.subarray(start * set.dim, end * set.dim), [end - start, set.dim])
      return model.predict(x) as ReturnType<Tf['tensor']>
    })
    out.set((await probs.data()) as Float32Array, start * k)
    probs.dispose()
  }
  return out
}
