// Stock TensorFlow.js (`@tensorflow/tfjs-node`, no Refit engine code) for the benchmarks' reference sides:
// load a downloaded model with tf.loadLayersModel, preprocess MNIST as its metadata.json says, score it.
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import type { LoadedDataset } from '../src/datasets/types.js'

export type TfNode = typeof import('@tensorflow/tfjs-node')

let tfPromise: Promise<TfNode> | null = null

/** tfjs-node, loaded on first use (so scripts that never score do not pay for it). */
export async function tfNode(): Promise<TfNode> {
  tfPromise ??= import('@tensorflow/tfjs-node').then(async (tf) => {
    await tf.ready()
    if (tf.getBackend() !== 'tensorflow') throw new Error(`tfjs-node backend is ${tf.getBackend()}, not tensorflow`)
    return tf
  })
  return tfPromise
}

export interface Metadata {
  input_shape: number[]
  preprocessing: { scale: number; offset: number; resize: boolean; channels: string }
  classes: string[] | null
  feature_layer: string | null
}

export async function readMetadataJson(dir: string): Promise<Metadata> {
  return JSON.parse(await readFile(path.join(dir, 'metadata.json'), 'utf8'))
}

export async function loadLayersModel(dir: string) {
  const tf = await tfNode()
  return tf.loadLayersModel(tf.io.fileSystem(path.join(dir, 'model.json')))
}

/**
 * Rows [start, end) of an MNIST LoadedDataset (uint8 28x28x1) as the model's input tensor: x * scale + offset,
 * bilinear resize to the model's height/width, 1 channel repeated to 3 when the model wants RGB.
 */
export async function mnistInput(ds: LoadedDataset, meta: Metadata, start = 0, end = ds.rows) {
  const tf = await tfNode()
  const [h, w, c] = meta.input_shape as [number, number, number]
  const [sh, sw, sc] = ds.sampleShape as [number, number, number]
  const size = sh * sw * sc
  return tf.tidy(() => {
    let x = tf.tensor4d(Float32Array.from((ds.x as Uint8Array).subarray(start * size, end * size)), [
      end - start,
      sh,
      sw,
      sc,
    ])
    x = x.mul(meta.preprocessing.scale).add(meta.preprocessing.offset)
    if (sh !== h || sw !== w) x = tf.image.resizeBilinear(x, [h, w])
    if (sc === 1 && c === 3) x = tf.tile(x, [1, 1, 1, 3])
    if (sc === 3 && c === 1) x = x.mean(-1, true)
    return x
  })
}

/** Accuracy of a model directory (model.json + metadata.json) on an MNIST set whose classes are digit names. */
export async function scoreMnist(
  dir: string,
  ds: LoadedDataset,
  batch = 500,
): Promise<{ accuracy: number; errors: number }> {
  const tf = await tfNode()
  const meta = await readMetadataJson(dir)
  const model = await loadLayersModel(dir)
  const classes = meta.classes ?? []
  let wrong = 0
  for (let start = 0; start < ds.rows; start += batch) {
    const end = Math.min(ds.rows, start + batch)
    const x = await mnistInput(ds, meta, start, end)
    const pred = tf.tidy(() => (model.predict(x) as import('@tensorflow/tfjs-node').Tensor).argMax(-1))
    const p = (await pred.data()) as Int32Array
    tf.dispose([x, pred])
    for (let i = 0; i < p.length; i++) if (classes[p[i]!] !== ds.classes[ds.y[start + i]!]) wrong++
  }
  model.dispose()
  return { accuracy: 1 - wrong / ds.rows, errors: wrong }
}
