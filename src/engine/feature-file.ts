// The feature cache's file format: one file's backbone features, its labels and its class names, so a later
// job on the same file and backbone needs neither the images nor the backbone. Written by the training
// process that computed the features, stored by its worker (src/modules/features), read back by the next
// job's training process, which trusts it only when its bytes hash to the sha256 the database recorded.
//
//   "RFEAT1\n" | u32 LE header length | header JSON {rows, dim, classes, shape} | labels i32 LE x rows
//   | features f32 LE x rows*dim
import { createHash } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { FeatureSet } from './transfer-data.js'

const MAGIC = Buffer.from('RFEAT1\n')

/** A cached file's features with the class names its labels index. */
export interface CachedFeatures {
  set: FeatureSet
  classes: string[]
  /** the feature layer's output shape without the batch dimension (`set.dim` values flattened) */
  shape: number[]
}

/** Writes `features` to `file`; returns what the worker records (sha256 of the bytes written, size). */
export async function writeFeatureFile(
  file: string,
  { set, classes, shape }: CachedFeatures,
): Promise<{ sha256: string; bytes: number }> {
  const header = Buffer.from(JSON.stringify({ rows: set.rows, dim: set.dim, classes, shape }))
  const len = Buffer.alloc(4)
  len.writeUInt32LE(header.length)
  // labels and features are fresh typed arrays: their whole buffers are exactly their contents
  const labels = Buffer.from(set.labels.buffer, set.labels.byteOffset, set.labels.byteLength)
  const features = Buffer.from(set.features.buffer, set.features.byteOffset, set.features.byteLength)
  const parts = [MAGIC, len, header, labels, features]
  const hash = createHash('sha256')
  for (const p of parts) hash.update(p)
  await mkdir(path.dirname(file), { recursive: true })
  await writeFile(file, parts)
  return { sha256: hash.digest('hex'), bytes: parts.reduce((n, p) => n + p.length, 0) }
}

/** Why a cached file was not used. */
export class CorruptFeatureFile extends Error {}

/** Reads a feature file, refusing it (CorruptFeatureFile) unless its bytes hash to `sha256` and parse. */
export async function readFeatureFile(file: string, sha256: string): Promise<CachedFeatures> {
  let bytes: Buffer
  try {
    bytes = await readFile(file)
  } catch (err) {
    throw new CorruptFeatureFile(`cannot read ${file}: ${(err as Error).message}`)
  }
  const actual = createHash('sha256').update(bytes).digest('hex')
  if (actual !== sha256)
    throw new CorruptFeatureFile(`sha256 ${actual.slice(0, 12)}… != recorded ${sha256.slice(0, 12)}…`)
  if (!bytes.subarray(0, MAGIC.length).equals(MAGIC)) throw new CorruptFeatureFile('not a feature file')
  const headerLen = bytes.readUInt32LE(MAGIC.length)
  const start = MAGIC.length + 4
  const { rows, dim, classes, shape } = JSON.parse(bytes.subarray(start, start + headerLen).toString('utf8')) as {
    rows: number
    dim: number
    classes: string[]
    shape: number[]
  }
  const labelsAt = start + headerLen
  const featuresAt = labelsAt + rows * 4
  if (bytes.length !== featuresAt + rows * dim * 4) throw new CorruptFeatureFile('size does not match its header')
  // copies: typed arrays need aligned offsets, and the Buffer may share Node's pool
  const labels = new Int32Array(rows)
  Buffer.from(labels.buffer).set(bytes.subarray(labelsAt, featuresAt))
  const features = new Float32Array(rows * dim)
  Buffer.from(features.buffer).set(bytes.subarray(featuresAt))
  return { set: { features, labels, dim, rows }, classes, shape }
}
