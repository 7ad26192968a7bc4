// The one place raw dataset samples become model input, for training and inference alike: channel fit,
// tabular standardization, then `x * scale + offset`. Images arrive already resized to the model's
// height/width by the datasets module (sharp); a size mismatch here is a bad request, not something to fix.
import type { LoadedDataset } from '../datasets/types.js'
import { incompatible } from './errors.js'
import type { Preprocessing } from './protocol.js'
import type { Tensor, Tf } from './tf.js'

/** The parts of a dataset preprocessing needs: one sample per row of `x`, each of `sampleShape`. */
export type RawSamples = Pick<LoadedDataset, 'kind' | 'x' | 'sampleShape'>

/** Throws `dataset_incompatible` (permanent) when samples of `ds` cannot become inputs of `inputShape`. */
export function checkCompatible(ds: RawSamples, inputShape: number[]): void {
  if (ds.kind === 'image') {
    if (inputShape.length !== 3)
      throw incompatible(`image samples cannot feed a model with input shape [${inputShape}]`)
    const [h, w, c] = ds.sampleShape
    const [mh, mw, mc] = inputShape
    if (h !== mh || w !== mw) throw incompatible(`images are ${h}x${w}, the model expects ${mh}x${mw}`)
    if (!channelFitSupported(c, mc)) throw incompatible(`images have ${c} channels, the model expects ${mc}`)
  } else {
    const features = ds.sampleShape.reduce((a, b) => a * b, 1)
    const want = inputShape.reduce((a, b) => a * b, 1)
    if (inputShape.length === 3)
      throw incompatible(`tabular rows cannot feed an image model with input [${inputShape}]`)
    if (features !== want) throw incompatible(`rows have ${features} features, the model expects ${want}`)
  }
}

function channelFitSupported(from: number, to: number): boolean {
  return from === to || (from === 1 && to === 3) || (from === 3 && to === 1) || (from === 4 && (to === 3 || to === 1))
}

/** Per-feature mean and standard deviation (std 1 where constant) of tabular rows, for `Preprocessing.standardize`. */
export function fitStandardization(ds: RawSamples, rows?: ArrayLike<number>): { mean: number[]; std: number[] } {
  const f = ds.sampleShape.reduce((a, b) => a * b, 1)
  const n = rows ? rows.length : ds.x.length / f
  const sum = new Float64Array(f)
  const sq = new Float64Array(f)
  for (let r = 0; r < n; r++) {
    const base = (rows ? rows[r] : r) * f
    for (let j = 0; j < f; j++) {
      const v = ds.x[base + j]
      sum[j] += v
      sq[j] += v * v
    }
  }
  const mean = Array.from(sum, (s) => s / Math.max(n, 1))
  const std = Array.from(sq, (s, j) => {
    const variance = s / Math.max(n, 1) - mean[j] * mean[j]
    return variance > 1e-12 ? Math.sqrt(variance) : 1
  })
  return { mean, std }
}

/** `start..end-1` as row indices. */
export function rowRange(start: number, end: number): Int32Array {
  const out = new Int32Array(Math.max(0, end - start))
  for (let i = 0; i < out.length; i++) out[i] = start + i
  return out
}

/**
 * Preprocesses the given rows of `ds` into a flat Float32Array of `rows.length * prod(inputShape)` values
 * in NHWC order. Caller must have run `checkCompatible`.
 */
export function preprocessRows(
  ds: RawSamples,
  rows: ArrayLike<number>,
  prep: Preprocessing,
  inputShape: number[],
): Float32Array {
  const per = inputShape.reduce((a, b) => a * b, 1)
  const out = new Float32Array(rows.length * per)
  const { scale, offset } = prep
  if (ds.kind === 'tabular') {
    const st = prep.standardize
    for (let r = 0; r < rows.length; r++) {
      const src = rows[r] * per
      const dst = r * per
      for (let j = 0; j < per; j++) {
        let v = ds.x[src + j]
        if (st) v = (v - st.mean[j]) / st.std[j]
        out[dst + j] = v * scale + offset
      }
    }
    return out
  }
  const [h, w, c] = ds.sampleShape
  const mc = inputShape[2]
  const pixels = h * w
  const inPer = pixels * c
  for (let r = 0; r < rows.length; r++) {
    const src = rows[r] * inPer
    const dst = r * per
    if (c === mc) {
      for (let j = 0; j < per; j++) out[dst + j] = ds.x[src + j] * scale + offset
    } else if (mc === 1) {
      // to gray: mean of the colour channels (alpha, when present, is ignored)
      const colours = Math.min(c, 3)
      for (let p = 0; p < pixels; p++) {
        let s = 0
        for (let k = 0; k < colours; k++) s += ds.x[src + p * c + k]
        out[dst + p] = (s / colours) * scale + offset
      }
    } else {
      // to RGB: repeat gray, or drop alpha
      for (let p = 0; p < pixels; p++) {
        for (let k = 0; k < 3; k++) out[dst + p * 3 + k] = ds.x[src + p * c + (c === 1 ? 0 : k)] * scale + offset
      }
    }
  }
  return out
}

/** The model input tensor `[rows.length, ...inputShape]` for the given rows of `ds` (default: all rows). */
export function toInputTensor(
  tf: Tf,
  ds: RawSamples & { rows?: number },
  prep: Preprocessing,
  inputShape: number[],
  rows?: ArrayLike<number>,
): Tensor {
  checkCompatible(ds, inputShape)
  const per = ds.sampleShape.reduce((a, b) => a * b, 1)
  const selected = rows ?? rowRange(0, ds.rows ?? ds.x.length / per)
  return tf.tensor(preprocessRows(ds, selected, prep, inputShape), [selected.length, ...inputShape], 'float32')
}
