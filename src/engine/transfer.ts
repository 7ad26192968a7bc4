// Transfer learning, training side: frozen backbone features computed once, a new head trained epoch by
// epoch on them (seeded shuffles, per-batch cancel, checkpoints), then the whole model composed and saved.
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { LoadedDataset } from '../datasets/types.js'
import { EngineError } from './errors.js'
import { evaluateProbabilities, lossAndAccuracy } from './evaluate.js'
import { loadModel, readMetadata, saveModel } from './model-io.js'
import type {
  BackendName,
  ChildMessage,
  EpochMetrics,
  Evaluation,
  ModelMetadata,
  TransferHyperparameters,
} from './protocol.js'
import { mulberry32, shuffledIndices } from './random.js'
import type { LayersModel, Tf } from './tf.js'
import {
  alignClasses,
  extractFeatures,
  type FeatureSet,
  featureBatch,
  predictFeatures,
  splitRows,
  takeRows,
} from './transfer-data.js'
import { buildHead, composeWholeModel, cutBackbone, type Head } from './transfer-model.js'

/** Everything a transfer run needs; datasets are already loaded (images at the base model's height/width). */
export interface TransferOptions {
  tf: Tf
  baseModelDir: string
  /** built-in id or model id of the base, recorded in the output metadata */
  baseModelId?: string | null
  train: LoadedDataset
  validation?: LoadedDataset
  hyperparameters: TransferHyperparameters
  seed: number
  outputDir: string
  emit: (message: ChildMessage) => void
  isCancelled: () => boolean
  backend?: BackendName
  /** samples per backbone forward pass while caching features; default 256 */
  featureBatchSize?: number
  /** minimum time between two `progress` messages; default 250 ms */
  progressIntervalMs?: number
  /** called after each epoch's checkpoint, with the epoch number (tests use it to watch tensor counts) */
  onEpochEnd?: (epoch: number) => void
}

/** What `runTransfer` produced; `modelDir` is null when cancelled. */
export interface TransferResult {
  modelDir: string | null
  evaluation: Evaluation | null
  trainedSamples: number
  cancelled: boolean
}

/**
 * Models sharing layers keep per-layer reference counts: each dispose lowers them and the last one frees the
 * weights; a model whose layers were all freed through another one throws "already disposed", harmlessly.
 */
function disposeShared(models: LayersModel[]): void {
  for (const m of models) {
    try {
      m.dispose()
    } catch {
      // already freed through a model sharing its layers
    }
  }
}

const yieldToEventLoop = () => new Promise((resolve) => setImmediate(resolve))

function validateHyperparameters(h: TransferHyperparameters): void {
  const ok =
    Number.isInteger(h.n_epochs) &&
    h.n_epochs >= 1 &&
    Number.isInteger(h.batch_size) &&
    h.batch_size >= 1 &&
    h.learning_rate > 0 &&
    Number.isFinite(h.learning_rate) &&
    h.validation_split >= 0 &&
    h.validation_split < 1
  if (!ok) throw new EngineError('invalid_hyperparameters', `invalid hyperparameters ${JSON.stringify(h)}`, true)
}

async function writeCheckpoint(tf: Tf, head: Head, dir: string, state: Record<string, unknown>): Promise<void> {
  await saveModel(tf, head.model, dir)
  // adam's moments and step: with the head weights, enough to continue the run where it stopped
  const optimizerWeights = await head.model.optimizer.getWeights()
  const { data, specs } = await tf.io.encodeWeights(optimizerWeights)
  await writeFile(path.join(dir, 'optimizer.bin'), Buffer.from(data as ArrayBuffer))
  await writeFile(path.join(dir, 'optimizer.json'), JSON.stringify({ weightSpecs: specs }))
  // getWeights hands out the live moment variables plus a fresh `iter` scalar: free only the latter
  tf.dispose(optimizerWeights.filter((w) => w.name === 'iter').map((w) => w.tensor))
  await writeFile(path.join(dir, 'state.json'), `${JSON.stringify(state, null, 2)}\n`)
}

/**
 * Trains a new classification head on the base model's frozen features and saves the whole model to
 * `outputDir/model/`. Emits `event`, `progress`, `epoch` and `checkpoint` messages through `emit`.
 */
export async function runTransfer(opts: TransferOptions): Promise<TransferResult> {
  const { tf, train, hyperparameters: hp, emit } = opts
  validateHyperparameters(hp)
  const meta = await readMetadata(opts.baseModelDir)
  if (!meta.feature_layer) {
    throw new EngineError('base_model_not_transferable', 'base model metadata names no feature_layer', true)
  }
  const classes = train.classes
  if (classes.length < 2)
    throw new EngineError('too_few_classes', `need at least 2 classes, got ${classes.length}`, true)
  if (train.rows < 2)
    throw new EngineError('too_few_samples', `need at least 2 training samples, got ${train.rows}`, true)
  const validationDs = opts.validation ? alignClasses(opts.validation, classes) : undefined

  const base = await loadModel(tf, opts.baseModelDir)
  const { backbone, features } = cutBackbone(tf, base, meta.feature_layer)
  const featureBatchSize = opts.featureBatchSize ?? 256

  const t0 = performance.now()
  const trainFeatures = await extractFeatures(
    tf,
    backbone,
    train,
    meta.preprocessing,
    meta.input_shape,
    featureBatchSize,
    opts.isCancelled,
  )
  const valFeaturesGiven = validationDs
    ? await extractFeatures(
        tf,
        backbone,
        validationDs,
        meta.preprocessing,
        meta.input_shape,
        featureBatchSize,
        opts.isCancelled,
      )
    : undefined
  if (!trainFeatures || valFeaturesGiven === null) return cancelled(base)
  const featureMs = Math.round(performance.now() - t0)
  emit({
    type: 'event',
    level: 'info',
    message: `computed backbone features for ${trainFeatures.rows + (valFeaturesGiven?.rows ?? 0)} samples`,
    data: {
      samples: trainFeatures.rows + (valFeaturesGiven?.rows ?? 0),
      ms: featureMs,
      feature_layer: meta.feature_layer,
      feature_dim: trainFeatures.dim,
    },
  })

  const rng = mulberry32(opts.seed)
  let trainSet: FeatureSet
  let valSet: FeatureSet | null
  if (valFeaturesGiven) {
    trainSet = trainFeatures
    valSet = valFeaturesGiven
  } else {
    const split = splitRows(trainFeatures.rows, hp.validation_split, rng)
    trainSet = takeRows(trainFeatures, split.train)
    valSet = split.validation.length > 0 ? takeRows(trainFeatures, split.validation) : null
  }

  const head = buildHead(tf, base, trainSet.dim, classes.length, opts.seed, hp.learning_rate)
  const stepsPerEpoch = Math.ceil(trainSet.rows / hp.batch_size)
  const totalSteps = stepsPerEpoch * hp.n_epochs
  const progressInterval = opts.progressIntervalMs ?? 250
  let step = 0
  let lastProgress = 0
  let trainedSamples = 0

  for (let epoch = 1; epoch <= hp.n_epochs; epoch++) {
    const order = shuffledIndices(trainSet.rows, rng)
    const epochStart = performance.now()
    let lossSum = 0
    let accSum = 0
    let seen = 0
    for (let s = 0; s < stepsPerEpoch; s++) {
      const rows = order.subarray(s * hp.batch_size, Math.min(trainSet.rows, (s + 1) * hp.batch_size))
      const { xs, ys } = featureBatch(tf, trainSet, rows, classes.length)
      let result: number | number[]
      try {
        result = await head.model.trainOnBatch(xs, ys)
      } finally {
        tf.dispose([xs, ys])
      }
      const [loss, acc] = result as number[]
      lossSum += loss * rows.length
      accSum += acc * rows.length
      seen += rows.length
      trainedSamples += rows.length
      step++
      const now = performance.now()
      if (now - lastProgress >= progressInterval) {
        lastProgress = now
        emit({
          type: 'progress',
          epoch,
          totalEpochs: hp.n_epochs,
          step,
          totalSteps,
          samplesPerSecond: Math.round((seen / Math.max(now - epochStart, 1)) * 1000),
        })
      }
      await yieldToEventLoop()
      if (opts.isCancelled()) {
        emit({
          type: 'event',
          level: 'info',
          message: `cancelled at epoch ${epoch}, step ${step}`,
          data: { epoch, step },
        })
        return cancelled(base, head.model, trainedSamples)
      }
    }
    const metrics: EpochMetrics = { loss: lossSum / seen, accuracy: accSum / seen }
    if (valSet) {
      const probs = await predictFeatures(tf, head.model, valSet, 512)
      const v = lossAndAccuracy(probs, valSet.labels, classes.length)
      metrics.val_loss = v.loss
      metrics.val_accuracy = v.accuracy
    }
    emit({ type: 'epoch', epoch, step, metrics })
    const dir = path.join(opts.outputDir, 'checkpoints', `epoch-${epoch}`)
    await mkdir(dir, { recursive: true })
    await writeCheckpoint(tf, head, dir, {
      epoch,
      step,
      seed: opts.seed,
      hyperparameters: hp,
      classes,
      feature_layer: meta.feature_layer,
      feature_dim: trainSet.dim,
      train_samples: trainSet.rows,
      validation_samples: valSet?.rows ?? 0,
      metrics,
    })
    emit({ type: 'checkpoint', epoch, step, dir, metrics })
    opts.onEpochEnd?.(epoch)
  }

  let evaluation: Evaluation | null = null
  if (valSet)
    evaluation = evaluateProbabilities(await predictFeatures(tf, head.model, valSet, 512), valSet.labels, classes)

  const whole = composeWholeModel(tf, base, features, head)
  const modelDir = path.join(opts.outputDir, 'model')
  const outMeta: ModelMetadata = {
    input_shape: meta.input_shape,
    preprocessing: meta.preprocessing,
    classes: [...classes],
    feature_layer: meta.feature_layer,
    description: `transfer learning on ${opts.baseModelId ?? 'a base model'}: new ${classes.length}-class head on ${meta.feature_layer}`,
    base_model: opts.baseModelId ?? null,
    method: 'transfer',
    backend: opts.backend ?? tf.getBackend(),
    trained_samples: trainedSamples,
    seed: opts.seed,
    hyperparameters: hp,
    evaluation,
  }
  await saveModel(tf, whole, modelDir, outMeta)
  disposeShared([whole, head.model, base])
  return { modelDir, evaluation, trainedSamples, cancelled: false }

  function cancelled(b: LayersModel, h?: LayersModel, n = 0): TransferResult {
    disposeShared(h ? [h, b] : [b])
    return { modelDir: null, evaluation: null, trainedSamples: n, cancelled: true }
  }
}
