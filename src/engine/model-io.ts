// Model directories: model.json + weights.bin (+ metadata.json), the layout tfjs-node's file:// handler writes,
// saved through withSaveHandler and loaded through fromMemory so that every backend (wasm, cpu) can do it.
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { io } from '@tensorflow/tfjs'
import { useRefitDropout } from './dropout.js'
import type { ModelMetadata } from './protocol.js'
import type { LayersModel, Tf } from './tf.js'

export const MODEL_JSON = 'model.json'
export const WEIGHTS_BIN = 'weights.bin'
export const METADATA_JSON = 'metadata.json'

function joinWeightData(tf: Tf, data: io.WeightData | undefined): ArrayBuffer {
  if (data === undefined) return new ArrayBuffer(0)
  return Array.isArray(data) ? tf.io.concatenateArrayBuffers(data) : data
}

/** Writes `model` to `dir` (created if needed) as model.json + weights.bin, plus metadata.json when given. */
export async function saveModel(tf: Tf, model: LayersModel, dir: string, metadata?: ModelMetadata): Promise<void> {
  await mkdir(dir, { recursive: true })
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightData = joinWeightData(tf, artifacts.weightData)
      const modelJson: io.ModelJSON = {
        modelTopology: artifacts.modelTopology as any,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs ?? [] }],
        ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig } : {}),
        ...(artifacts.userDefinedMetadata ? { userDefinedMetadata: artifacts.userDefinedMetadata } : {}),
      }
      await writeFile(path.join(dir, WEIGHTS_BIN), Buffer.from(weightData))
      await writeFile(path.join(dir, MODEL_JSON), JSON.stringify(modelJson))
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) }
    }),
  )
  if (metadata) await writeMetadata(dir, metadata)
}

export async function writeMetadata(dir: string, metadata: ModelMetadata): Promise<void> {
  await writeFile(path.join(dir, METADATA_JSON), `${JSON.stringify(metadata, null, 2)}\n`)
}

export async function readMetadata(dir: string): Promise<ModelMetadata> {
  return JSON.parse(await readFile(path.join(dir, METADATA_JSON), 'utf8')) as ModelMetadata
}

/** Reads a model directory into in-memory artifacts (all weight shards concatenated in manifest order). */
export async function readModelArtifacts(dir: string): Promise<io.ModelArtifacts> {
  const modelJson = JSON.parse(await readFile(path.join(dir, MODEL_JSON), 'utf8')) as io.ModelJSON
  const weightSpecs: io.WeightsManifestEntry[] = []
  const buffers: Buffer[] = []
  for (const group of modelJson.weightsManifest) {
    weightSpecs.push(...group.weights)
    for (const p of group.paths) buffers.push(await readFile(path.join(dir, p)))
  }
  const all = Buffer.concat(buffers)
  return {
    modelTopology: modelJson.modelTopology,
    format: modelJson.format,
    generatedBy: modelJson.generatedBy,
    convertedBy: modelJson.convertedBy,
    trainingConfig: modelJson.trainingConfig,
    userDefinedMetadata: modelJson.userDefinedMetadata,
    weightSpecs,
    weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer,
  }
}

/** Loads a LayersModel from a model directory on whichever backend is active. */
export async function loadModel(tf: Tf, dir: string): Promise<LayersModel> {
  return tf.loadLayersModel(tf.io.fromMemory(await readModelArtifacts(dir)))
}

/** Writes into `dir` by filling a sibling temp directory and renaming it; an existing `dir` is replaced. */
export async function writeDirAtomically(dir: string, fill: (tmpDir: string) => Promise<void>): Promise<void> {
  // Random, not pid+time: two requests of one process may materialize the same directory at once.
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`
  await rm(tmp, { recursive: true, force: true })
  await mkdir(tmp, { recursive: true })
  try {
    await fill(tmp)
    await rm(dir, { recursive: true, force: true })
    await rename(tmp, dir)
  } catch (err) {
    await rm(tmp, { recursive: true, force: true })
    throw err
  }
}

/** Loads a model to train: its Dropout layers become RefitDropout (seeded masks, saved back as Dropout). */
export async function loadModelForTraining(tf: Tf, dir: string): Promise<LayersModel> {
  const artifacts = await readModelArtifacts(dir)
  useRefitDropout(tf, artifacts.modelTopology)
  return tf.loadLayersModel(tf.io.fromMemory(artifacts))
}

/** The raw model.json topology of a model directory (for capability checks before loading). */
export async function readTopology(dir: string): Promise<unknown> {
  return (JSON.parse(await readFile(path.join(dir, MODEL_JSON), 'utf8')) as io.ModelJSON).modelTopology
}
