// What an inference process computes: raw inputs -> the very preprocessing training used -> probabilities,
// and a model's scores on a labelled dataset. Images go through decodeImageToShape (the path loadDataset
// takes for training files) and every sample through the engine's preprocessRows.
import { convertRawImage, decodeImageToShape, type ImageShape } from '../datasets/image.js'
import { loadDataset } from '../datasets/load.js'
import { EngineError } from '../engine/errors.js'
import { evaluateProbabilities } from '../engine/evaluate.js'
import { forwardRows, frozenForward } from '../engine/graph/forward.js'
import { graphModelForward, isGraphModelMeta } from '../engine/graph/graph-model-forward.js'
import {
  analyzeTopology,
  cachedModelBytes,
  estimateInference,
  forwardBatchSize,
  readModelShape,
  type TopologyCost,
} from '../engine/memory-estimate.js'
import { loadModel, readMetadata } from '../engine/model-io.js'
import { checkCompatible, preprocessRows, rowRange } from '../engine/preprocess.js'
import type { Evaluation, GraphSettings, ModelMetadata } from '../engine/protocol.js'
import type { LayersModel, Tf } from '../engine/tf.js'
import type { ErrorDetail } from '../errors.js'
import type { CachedModel } from './model-cache.js'
import { decodePlainPng, plainPngToShape } from './plain-png.js'
import type { EvaluateRequest, RawInputs } from './protocol.js'

/**
 * Largest photo a prediction decodes (it is resized to the model's input at once, a few at a time), kept
 * apart from MAX_IMAGE_PIXELS, which bounds what a dataset holds in memory for a whole training run.
 */
export const PREDICTION_MAX_IMAGE_PIXELS = 4096 * 4096

/** Inputs the model cannot take; `details` name each input at fault. */
export class InputError extends Error {
  constructor(
    message: string,
    readonly details: ErrorDetail[],
  ) {
    super(message)
    this.name = 'InputError'
  }
}

/**
 * Loads a model directory and prepares its forward pass: the whole model as a TensorFlow graph through a
 * SavedModel session where the engine can compile it (engine/graph/forward.ts), else the LayersModel op by
 * op. Bytes: the weights (float32 in memory, whatever the stored dtype), the constants the compiled session
 * holds (a second copy: the LayersModel stays for exports and the graph's first-batch check) and, from the
 * topology, what a batch of inputs adds (memory-estimate.ts).
 */
export async function loadCachedModel(
  tf: Tf,
  key: string,
  dir: string,
  graph?: GraphSettings,
  limitBytes = 0,
): Promise<CachedModel> {
  if (isGraphModelMeta(await readMetadata(dir))) return loadCachedGraphModel(tf, key, dir, graph)
  const [model, meta, shape] = await Promise.all([loadModel(tf, dir), readMetadata(dir), readModelShape(dir)])
  const weights = model.countParams() * 4
  let cost: TopologyCost | null = null
  try {
    cost = analyzeTopology(shape.topology, meta.input_shape)
  } catch {
    // a topology the estimator cannot walk: weights only
  }
  // compile only what then still fits the process's limit (0 = none); a topology the estimator cannot walk
  // under a limit runs eager rather than risk the process being killed for memory on load
  const fits =
    limitBytes <= 0 ||
    (cost !== null && estimateInference(cost, 1, model.countParams(), 1, true).totalBytes <= limitBytes)
  let forward: CachedModel['forward']
  if (fits)
    try {
      forward = await frozenForward(tf, { model, backend: tf.getBackend(), settings: graph })
    } catch (err) {
      model.dispose()
      throw err
    }
  const f = forward
  // predictProbabilities and forwardRows run 64 inputs per pass at most; the session's bytes drop to 0 if the
  // first batch's check sends the model back to eager
  const bytesFor = (batch: number) =>
    (cost ? weights + cachedModelBytes(cost, Math.min(batch, 64), 0) : weights) + (f?.bytes ?? 0)
  return { key, model, meta, forward, bytes: weights + (f?.bytes ?? 0), bytesFor }
}

/**
 * A TF.js graph model (an uploaded one, or one fine-tuned on a graph-model base) converted whole and run
 * through its SavedModel session; there is no LayersModel and no eager fallback. Bytes: the weights as float32
 * and the session's constants, plus what the estimator gives a batch's activations (memory-estimate.ts).
 */
async function loadCachedGraphModel(tf: Tf, key: string, dir: string, graph?: GraphSettings): Promise<CachedModel> {
  const [meta, shape] = await Promise.all([readMetadata(dir), readModelShape(dir)])
  const forward = await graphModelForward(tf, {
    dir,
    inputShape: meta.input_shape,
    backend: tf.getBackend(),
    settings: graph,
  })
  let cost: TopologyCost | null = null
  try {
    cost = analyzeTopology(shape.topology, meta.input_shape)
  } catch {
    // an op the estimator cannot walk: weights only
  }
  const weights = (shape.params ?? 0) * 4
  const bytesFor = (batch: number) =>
    (cost ? weights + cachedModelBytes(cost, Math.min(batch, 64), 0) : weights) + forward.bytes
  return { key, model: null, meta, forward, bytes: weights + forward.bytes, bytesFor }
}

/** Flat preprocessed model input for `inputs` (`rows * prod(input_shape)` values). */
export async function preprocessInputs(inputs: RawInputs, meta: ModelMetadata): Promise<Float32Array> {
  const shape = meta.input_shape
  if (inputs.kind === 'tabular') {
    const ds = { kind: 'tabular' as const, x: inputs.features, sampleShape: [shape.reduce((a, b) => a * b, 1)] }
    return preprocessRows(ds, rowRange(0, inputs.rows), meta.preprocessing, shape)
  }
  if (shape.length !== 3) throw new InputError('The model does not take images.', [])
  const per = shape[0] * shape[1] * shape[2]
  const n = inputs.images.length
  const x = new Uint8Array(n * per)
  const problems: ErrorDetail[] = []
  // sharp decodes on libuv's thread pool: a few at a time keeps memory flat for large batches.
  let next = 0
  const decodeNext = async (): Promise<void> => {
    for (let i = next++; i < n; i = next++) {
      const bytes = inputs.images[i]
      try {
        const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
        // a plain PNG skips sharp's decode (plain-png.ts); the pixels are the same either way
        const plain = decodePlainPng(buf, PREDICTION_MAX_IMAGE_PIXELS)
        const pixels = plain
          ? ((await plainPngToShape(plain, shape as ImageShape)) ?? (await convertRawImage(plain, shape as ImageShape)))
          : await decodeImageToShape(buf, shape as ImageShape, PREDICTION_MAX_IMAGE_PIXELS)
        x.set(pixels, i * per)
      } catch (e) {
        problems.push({ field: `inputs[${i}].image`, message: (e as Error).message })
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(4, n) }, decodeNext))
  if (problems.length) {
    problems.sort((a, b) => a.field!.localeCompare(b.field!, 'en', { numeric: true }))
    throw new InputError(
      `${problems.length} image(s) could not be decoded: ${problems[0].field}: ${problems[0].message}`,
      problems,
    )
  }
  return preprocessRows({ kind: 'image', x, sampleShape: shape }, rowRange(0, n), meta.preprocessing, shape)
}

/** Runs the model on `rows` preprocessed samples, `batchSize` at a time; returns probabilities and their width. */
export async function predictProbabilities(
  tf: Tf,
  model: LayersModel,
  x: Float32Array,
  rows: number,
  inputShape: number[],
  batchSize = 64,
): Promise<{ probs: Float32Array; classes: number }> {
  const per = inputShape.reduce((a, b) => a * b, 1)
  const outShape = model.outputs[0].shape
  const k = outShape[outShape.length - 1] ?? 0
  const probs = new Float32Array(rows * k)
  for (let start = 0; start < rows; start += batchSize) {
    const end = Math.min(rows, start + batchSize)
    const out = tf.tidy(() => {
      const input = tf.tensor(x.subarray(start * per, end * per), [end - start, ...inputShape], 'float32')
      const y = model.predict(input)
      return (Array.isArray(y) ? y[0] : y).reshape([end - start, k])
    })
    try {
      probs.set((await out.data()) as Float32Array, start * k)
    } finally {
      out.dispose()
    }
  }
  return { probs, classes: k }
}

/**
 * Predicts `inputs` with a cached model, through its compiled graph when it has one; `forward` says which
 * path computed them (the graph may turn eager after its first batch's check).
 */
export async function predictInputs(
  tf: Tf,
  m: CachedModel,
  inputs: RawInputs,
): Promise<{ probs: Float32Array; classes: number; forward: 'graph' | 'eager' }> {
  const x = await preprocessInputs(inputs, m.meta)
  const rows = inputs.kind === 'image' ? inputs.images.length : inputs.rows
  const shape = m.meta.input_shape
  const f = m.forward
  if (f?.path !== 'graph') {
    if (!m.model) throw new Error('a graph model without its session')
    return { ...(await predictProbabilities(tf, m.model, x, rows, shape)), forward: 'eager' }
  }
  const per = shape.reduce((a, b) => a * b, 1)
  const k = f.outputShape[f.outputShape.length - 1] ?? 0
  const probs = await forwardRows(f, rows, 64, (start, end) =>
    tf.tensor(x.subarray(start * per, end * per), [end - start, ...shape], 'float32'),
  )
  return { probs: probs!, classes: k, forward: f.path }
}

/**
 * Scores the model in `req.modelDir` on a labelled dataset: loss, accuracy, per-class precision/recall and
 * the confusion matrix over the model's classes. The dataset's classes must all be among the model's.
 */
export async function evaluateDataset(tf: Tf, req: EvaluateRequest): Promise<Evaluation> {
  const meta = await readMetadata(req.modelDir)
  const classes = meta.classes
  if (!classes?.length) throw new EngineError('model_not_predictable', 'the model has no class names', true)
  const shape = meta.input_shape
  const ds = await loadDataset(req.dataset.path, req.dataset.format, {
    ...req.dataset.options,
    ...(shape.length === 3 ? { imageShape: shape as ImageShape } : {}),
  })
  checkCompatible(ds, shape)
  const index = new Map(classes.map((c, i) => [c, i]))
  const unknown = ds.classes.filter((c) => !index.has(c))
  if (unknown.length)
    throw new EngineError(
      'dataset_incompatible',
      `the dataset has classes the model does not know: ${unknown.slice(0, 10).join(', ')}`,
      true,
    )
  const remap = ds.classes.map((c) => index.get(c)!)
  const labels = Int32Array.from(ds.y, (y) => remap[y])
  const model = isGraphModelMeta(meta) ? null : await loadModel(tf, req.modelDir)
  const forward = model
    ? await frozenForward(tf, { model, backend: tf.getBackend(), settings: req.graph })
    : await graphModelForward(tf, {
        dir: req.modelDir,
        inputShape: shape,
        backend: tf.getBackend(),
        settings: req.graph,
      })
  try {
    // large inputs in smaller passes (a MobileNetV2 pass of 256 images holds ~7 GB); the estimate
    // (assertEvaluationFits) assumes the same passes
    const batch = req.batchSize ?? forwardBatchSize(shape)
    const k = forward.outputShape[forward.outputShape.length - 1] ?? 0
    if (k !== classes.length)
      throw new EngineError(
        'model_not_predictable',
        `the model has ${k} outputs but ${classes.length} class names`,
        true,
      )
    const probs = await forwardRows(forward, ds.rows, batch, (start, end) =>
      tf.tensor(
        preprocessRows(ds, rowRange(start, end), meta.preprocessing, shape),
        [end - start, ...shape],
        'float32',
      ),
    )
    return evaluateProbabilities(probs!, labels, classes)
  } finally {
    forward.dispose()
    model?.dispose()
  }
}
