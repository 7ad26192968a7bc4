// The training core every method shares: inputs by row index, a seeded split, the optimizer, a custom training
// step (`optimizer.minimize` around a forward pass with inference-mode layers and seeded dropout, or the same
// step compiled into one TensorFlow graph where the model allows: graph/train-step.ts), validation, early
// stopping with best-weight restore, whole-model checkpoints (+ optimizer and state.json) and resume.
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { LoadedDataset } from '../datasets/types.js'
import { withDropout } from './dropout.js'
import { EngineError } from './errors.js'
import { evaluateProbabilities, lossAndAccuracy } from './evaluate.js'
import { DEFAULT_GRAPH_SETTINGS } from './graph/forward.js'
import { compileTrainStep, type EagerReason, GraphTrainStep } from './graph/train-step.js'
import { loadModel, saveModel } from './model-io.js'
import { checkCompatible, preprocessRows } from './preprocess.js'
import type {
  BackendName,
  ChildMessage,
  EarlyStopping,
  EpochMetrics,
  Evaluation,
  GraphSettings,
  ModelMetadata,
  OptimizerName,
  Preprocessing,
  TrainHyperparameters,
} from './protocol.js'
import { mulberry32, Rng, shuffledIndices } from './random.js'
import type { LayersModel, Optimizer, Scalar, SymbolicTensor, Tensor, Tf, Variable } from './tf.js'
import type { FeatureSet } from './transfer-data.js'

/** Makes the model input tensor for some rows of a data source. Caller disposes. */
export interface InputSource {
  input(tf: Tf, rows: ArrayLike<number>): Tensor
}

/** Rows of a source used for training or validation; `labels` are indexed by source row. */
export interface Part {
  source: InputSource
  rows: Int32Array
  labels: Int32Array
}

/** Raw dataset rows preprocessed exactly as inference does (preprocess.ts). */
export function rawSource(ds: LoadedDataset, prep: Preprocessing, inputShape: number[]): InputSource {
  checkCompatible(ds, inputShape)
  return {
    input: (tf, rows) =>
      tf.tensor(preprocessRows(ds, rows, prep, inputShape), [rows.length, ...inputShape], 'float32') as Tensor,
  }
}

/** Cached backbone features. */
/**
 * Cached features held once in the backend (one tensor for the whole run) and gathered natively per
 * batch: copying a batch out of a JS array and back into the backend cost ~8% of head-training time.
 * The caller disposes the source when the run ends.
 */
export function featureSource(tf: Tf, set: FeatureSet): InputSource & { dispose(): void } {
  const all = tf.tensor2d(set.features, [set.rows, set.dim])
  return {
    input: (tf, rows) => tf.tidy(() => tf.gather(all, tf.tensor1d(Int32Array.from(rows), 'int32'))),
    dispose: () => all.dispose(),
  }
}

export const yieldToEventLoop = () => new Promise((resolve) => setImmediate(resolve))

export function validateHyperparameters(h: TrainHyperparameters): void {
  const es = h.early_stopping
  const ok =
    Number.isInteger(h.n_epochs) &&
    h.n_epochs >= 1 &&
    Number.isInteger(h.batch_size) &&
    h.batch_size >= 1 &&
    h.learning_rate > 0 &&
    Number.isFinite(h.learning_rate) &&
    h.validation_split >= 0 &&
    h.validation_split < 1 &&
    (h.optimizer === undefined || ['adam', 'sgd', 'rmsprop'].includes(h.optimizer)) &&
    (!es ||
      (Number.isInteger(es.patience) &&
        es.patience >= 1 &&
        es.min_delta >= 0 &&
        (es.monitor === 'val_loss' || es.monitor === 'val_accuracy')))
  if (!ok) throw new EngineError('invalid_hyperparameters', `invalid hyperparameters ${JSON.stringify(h)}`, true)
}

export function makeOptimizer(tf: Tf, name: OptimizerName | undefined, learningRate: number): Optimizer {
  if (name === 'sgd') return tf.train.sgd(learningRate)
  if (name === 'rmsprop') return tf.train.rmsprop(learningRate)
  return tf.train.adam(learningRate)
}

/**
 * A forward pass to logits for a classifier whose last layer is a softmax Dense (or softmax Activation):
 * the layers below run as they are, the last Dense's kernel and bias are applied without the softmax, so
 * losses use numerically stable softmax cross-entropy. All layers run with `training: false`: BatchNorm
 * keeps its moving statistics (STACK.md), dropout is switched on by `withDropout` instead.
 */
export function logitsFn(tf: Tf, model: LayersModel): (x: Tensor) => Tensor {
  const out = model.outputs[0] as SymbolicTensor & { inputs?: SymbolicTensor[] }
  const last = out.sourceLayer
  const config = last.getConfig() as { activation?: string }
  const below = out.inputs?.[0]
  if (
    below &&
    config.activation === 'softmax' &&
    (last.getClassName() === 'Dense' || last.getClassName() === 'Activation')
  ) {
    const trunk = tf.model({ inputs: model.inputs, outputs: below })
    if (last.getClassName() === 'Activation') return (x) => trunk.apply(x, { training: false }) as Tensor
    const [kernel, bias] = last.weights
    return (x) => {
      const h = trunk.apply(x, { training: false }) as Tensor
      const z = tf.matMul(h as any, kernel.read() as any)
      return bias ? tf.add(z, bias.read()) : z
    }
  }
  // Any other classifier: log-probabilities are its logits up to a per-row constant, which softmax ignores.
  return (x) => tf.log(tf.maximum(model.apply(x, { training: false }) as Tensor, 1e-30))
}

/** Trainable variables of these layers (weights of frozen layers are left out). */
export function trainableVariables(layers: LayersModel['layers']): Variable[] {
  const out: Variable[] = []
  for (const l of layers) if (l.trainable) for (const w of l.trainableWeights) out.push(w.read() as Variable)
  return out
}

/** Mean softmax cross-entropy of logits against one-hot labels. */
export function crossEntropy(tf: Tf, logits: Tensor, oneHot: Tensor): Scalar {
  return tf.losses.softmaxCrossEntropy(oneHot, logits) as Scalar
}

/**
 * Knowledge-distillation loss (Hinton et al. 2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) *
 * CE(labels, student), means over the batch. `teacherT` holds the teacher's probabilities at temperature T;
 * the T^2 keeps the soft term's gradients on the same scale as the hard term's when T changes.
 */
export function distillationLoss(
  tf: Tf,
  logits: Tensor,
  oneHot: Tensor,
  teacherT: Tensor,
  temperature: number,
  alpha: number,
): Scalar {
  return tf.tidy(() => {
    const logStudentT = tf.logSoftmax(tf.div(logits, temperature) as any)
    const logTeacherT = tf.log(tf.maximum(teacherT, 1e-30))
    const kl = tf.mean(tf.sum(tf.mul(teacherT, tf.sub(logTeacherT, logStudentT)), -1))
    const ce = crossEntropy(tf, logits, oneHot)
    return tf.add(tf.mul(kl, alpha * temperature * temperature), tf.mul(ce, 1 - alpha)) as Scalar
  })
}

// one rule for the engine and the memory estimates (a MobileNetV2 batch of 256 at 224x224x3 took ~7 GB)
export { forwardBatchSize } from './memory-estimate.js'

/** Class probabilities (softmax of `forward`) for the rows of a part, in batches, dropout off. */
export async function predictPart(
  tf: Tf,
  forward: (x: Tensor) => Tensor,
  part: Part,
  k: number,
  batchSize = 256,
): Promise<Float32Array> {
  const out = new Float32Array(part.rows.length * k)
  for (let start = 0; start < part.rows.length; start += batchSize) {
    const rows = part.rows.subarray(start, Math.min(part.rows.length, start + batchSize))
    const probs = tf.tidy(() => tf.softmax(withDropout(null, () => forward(part.source.input(tf, rows)))))
    out.set((await probs.data()) as Float32Array, start * k)
    probs.dispose()
  }
  return out
}

/** Labels of a part's rows, in row order. */
export function partLabels(part: Part): Int32Array {
  return Int32Array.from(part.rows, (r) => part.labels[r])
}

/** What a loop carries from epoch to epoch, and what state.json stores to resume it. */
export interface LoopState {
  phase: number
  /** first epoch number of the current phase */
  phaseStartEpoch: number
  epoch: number
  step: number
  trainedSamples: number
  best: number | null
  bestEpoch: number | null
  bestCheckpointDir: string | null
  /** epochs since the last improvement */
  wait: number
  /** a mid-epoch checkpoint (pause): where in epoch `epoch + 1` it stopped; null at an epoch's end */
  inEpoch?: EpochPosition | null
}

/**
 * Where a paused epoch stopped. Its batch order is drawn again from `orderRngState` (the generator's state
 * when the epoch drew it), the running sums make its epoch metrics those of an uninterrupted epoch, and the
 * generator goes on from the checkpoint's `rng_state` (dropout masks of the batches still to come).
 */
export interface EpochPosition {
  orderRngState: number
  /** batches of the epoch already trained */
  batches: number
  lossSum: number
  correctSum: number
  seen: number
}

/** state.json of a checkpoint. */
export interface CheckpointState extends LoopState {
  rng_state: number
  seed: number
  method: string
  hyperparameters: TrainHyperparameters
  classes: string[]
  metrics: EpochMetrics
  /** weights of the best epoch so far live in this checkpoint directory */
  [key: string]: unknown
}

/** Model weights copied to the JS heap (early stopping's best epoch). */
export type WeightSnapshot = Float32Array[]

export async function snapshotWeights(model: LayersModel): Promise<WeightSnapshot> {
  return Promise.all(model.weights.map(async (w) => Float32Array.from((await w.read().data()) as Float32Array)))
}

export function restoreWeights(tf: Tf, model: LayersModel, snap: WeightSnapshot): void {
  const tensors = model.weights.map((w, i) => tf.tensor(snap[i], w.shape as number[], 'float32'))
  model.setWeights(tensors)
  tf.dispose(tensors)
}

/**
 * Copies weights from the model in `dir` into `model`'s layers of the same name and weight shapes.
 * Returns the names of the layers copied.
 */
export async function copyWeightsByName(tf: Tf, model: LayersModel, dir: string): Promise<string[]> {
  const src = await loadModel(tf, dir)
  const copied: string[] = []
  try {
    const byName = new Map(src.layers.map((l) => [l.name, l]))
    for (const layer of model.layers) {
      const from = byName.get(layer.name)
      if (!from || layer.weights.length === 0 || from.weights.length !== layer.weights.length) continue
      const same = layer.weights.every((w, i) => w.shape.join() === from.weights[i].shape.join())
      if (!same) continue
      const values = from.getWeights()
      layer.setWeights(values)
      copied.push(layer.name)
    }
  } finally {
    src.dispose()
  }
  return copied
}

/** What checkpoints need of an optimizer: tfjs's optimizers, and the compiled training step (its own state). */
export type OptimizerState = Pick<Optimizer, 'getWeights' | 'setWeights' | 'dispose'>

/** Writes the whole model (+ metadata), the optimizer's state and state.json into `dir`. */
export async function writeCheckpoint(
  tf: Tf,
  dir: string,
  model: LayersModel,
  metadata: ModelMetadata,
  optimizer: OptimizerState,
  state: CheckpointState,
): Promise<void> {
  await mkdir(dir, { recursive: true })
  await saveModel(tf, model, dir, metadata)
  const weights = await optimizer.getWeights()
  const { data, specs } = await tf.io.encodeWeights(weights)
  await writeFile(path.join(dir, 'optimizer.bin'), Buffer.from(data as ArrayBuffer))
  await writeFile(path.join(dir, 'optimizer.json'), JSON.stringify({ weightSpecs: specs }))
  // getWeights hands out the live slot variables plus a fresh `iter` scalar: free only the latter
  tf.dispose(weights.filter((w) => w.name === 'iter').map((w) => w.tensor))
  await writeFile(path.join(dir, 'state.json'), `${JSON.stringify(state, null, 2)}\n`)
}

export async function readCheckpointState(dir: string): Promise<CheckpointState> {
  try {
    return JSON.parse(await readFile(path.join(dir, 'state.json'), 'utf8')) as CheckpointState
  } catch (err) {
    throw new EngineError('checkpoint_invalid', `cannot read ${dir}/state.json: ${(err as Error).message}`, true)
  }
}

/** Loads a checkpoint's optimizer.json/.bin into `optimizer` (same variables, same order as when saved). */
export async function restoreOptimizer(tf: Tf, optimizer: OptimizerState, dir: string): Promise<void> {
  const { weightSpecs } = JSON.parse(await readFile(path.join(dir, 'optimizer.json'), 'utf8'))
  const bin = await readFile(path.join(dir, 'optimizer.bin'))
  const map = tf.io.decodeWeights(
    bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength) as ArrayBuffer,
    weightSpecs,
  )
  const named = (weightSpecs as { name: string }[]).map((s) => ({ name: s.name, tensor: map[s.name] }))
  await optimizer.setWeights(named)
  tf.dispose(Object.values(map))
}

/** Steps between two `batch` messages (one batch's loss and accuracy, for live per-step curves). */
export const BATCH_REPORT_EVERY = 10

/** Everything one training phase needs. */
export interface LoopParams {
  tf: Tf
  emit: (m: ChildMessage) => void
  isCancelled: () => boolean
  /** pause requested: write a mid-epoch checkpoint at the end of the batch and stop */
  isPaused?: () => boolean
  /** logits of a batch; layers in inference mode, dropout drawn while `withDropout` is active */
  forward: (x: Tensor) => Tensor
  variables: Variable[]
  optimizer: OptimizerState
  /** the compiled training step: when set, it trains each batch (and is `optimizer`) */
  graphStep?: GraphTrainStep | null
  numClasses: number
  train: Part
  val: Part | null
  batchSize: number
  lastEpoch: number
  /** for progress messages: the last epoch of the whole job */
  totalEpochs: number
  rng: Rng
  state: LoopState
  earlyStopping?: EarlyStopping | null
  /** per training-source row, the teacher's probabilities at temperature T ([rows, k]) */
  soft?: { probs: Float32Array; temperature: number; alpha: number }
  /** the model whose weights early stopping snapshots and restores (the one saved) */
  model: LayersModel
  bestSnapshot: { weights: WeightSnapshot | null }
  /** writes epoch's checkpoint (mid-epoch when `position` is given: a pause), returns its directory */
  checkpoint: (epoch: number, metrics: EpochMetrics, position?: EpochPosition) => Promise<string>
  progressIntervalMs?: number
  onEpochEnd?: (epoch: number) => void
}

/** How a phase ended. */
export type LoopEnd = 'completed' | 'early_stopped' | 'cancelled' | 'paused'

function improved(es: EarlyStopping, best: number | null, value: number): boolean {
  if (best === null) return true
  return es.monitor === 'val_loss' ? best - value > es.min_delta : value - best > es.min_delta
}

/** Trains epochs `state.epoch + 1 .. lastEpoch` (fewer when early stopping or a cancel ends the phase). */
export async function runEpochs(p: LoopParams): Promise<LoopEnd> {
  const { tf, state, train, rng } = p
  const k = p.numClasses
  const n = train.rows.length
  const stepsPerEpoch = Math.ceil(n / p.batchSize)
  const totalSteps = stepsPerEpoch * p.totalEpochs
  const progressInterval = p.progressIntervalMs ?? 250
  const es = p.earlyStopping ?? null
  let lastProgress = 0
  let lastYield = 0
  if (es && !p.val) {
    p.emit({
      type: 'event',
      level: 'warn',
      message: `early stopping monitors ${es.monitor} but there is no validation data: monitoring the training ${es.monitor === 'val_loss' ? 'loss' : 'accuracy'} instead`,
    })
  }
  while (state.epoch < p.lastEpoch) {
    const epoch = state.epoch + 1
    // resuming a paused epoch: the same order, drawn from the same generator state; then the generator
    // goes on from where the pause left it
    const at = state.inEpoch ?? null
    state.inEpoch = null
    const current = rng.state
    const orderRngState = at ? at.orderRngState : current
    rng.state = orderRngState
    const order = shuffledIndices(n, () => rng.next())
    if (at) rng.state = current
    const epochStart = performance.now()
    let lossSum = at?.lossSum ?? 0
    let correctSum = at?.correctSum ?? 0
    let seen = at?.seen ?? 0
    let seenHere = 0
    for (let s = at?.batches ?? 0; s < stepsPerEpoch; s++) {
      const idx = order.subarray(s * p.batchSize, Math.min(n, (s + 1) * p.batchSize))
      const rows = Int32Array.from(idx, (i) => train.rows[i])
      const x = train.source.input(tf, rows)
      // class indices for the eager step; the compiled step takes one-hot targets instead
      let labels: Tensor | null = null
      let soft: Tensor | null = null
      if (p.soft) {
        const buf = new Float32Array(rows.length * k)
        for (let i = 0; i < rows.length; i++) buf.set(p.soft.probs.subarray(rows[i] * k, (rows[i] + 1) * k), i * k)
        soft = tf.tensor2d(buf, [rows.length, k])
      }
      let correct: Tensor | null = null
      let cost: Tensor | null = null
      let batchLoss = 0
      let batchAccuracy = 0
      try {
        if (p.graphStep) {
          // the compiled step returns [loss, correct] and has already updated the variables
          const target = new Float32Array(rows.length * k)
          for (let i = 0; i < rows.length; i++) target[i * k + train.labels[rows[i]]] = 1
          const y = tf.tensor2d(target, [rows.length, k])
          try {
            cost = p.graphStep.run(x, y, soft, rng)
          } finally {
            y.dispose()
          }
        } else {
          const ids = tf.tensor1d(
            Int32Array.from(rows, (r) => train.labels[r]),
            'int32',
          )
          labels = ids
          const loss = (p.optimizer as Optimizer).minimize(
            () => {
              const logits = withDropout(rng, () => p.forward(x))
              const y = tf.oneHot(ids, k)
              correct = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(logits, -1), ids), 'float32')))
              return soft && p.soft
                ? distillationLoss(tf, logits, y, soft, p.soft.temperature, p.soft.alpha)
                : crossEntropy(tf, logits, y)
            },
            true,
            p.variables,
          )
          // One read per batch (loss and correct count together): each read is a sync with the backend.
          cost = tf.stack([loss!, correct as unknown as Tensor])
          loss!.dispose()
        }
        const [loss, c] = await cost.data()
        if (!Number.isFinite(loss))
          throw new EngineError(
            'training_diverged',
            `loss became ${loss} at epoch ${epoch}, step ${state.step + 1}: lower the learning rate`,
            true,
          )
        lossSum += loss * rows.length
        correctSum += c
        batchLoss = loss
        batchAccuracy = c / rows.length
      } finally {
        tf.dispose([
          x,
          ...(labels ? [labels] : []),
          ...(soft ? [soft] : []),
          ...(correct ? [correct] : []),
          ...(cost ? [cost] : []),
        ])
      }
      seen += rows.length
      seenHere += rows.length
      state.trainedSamples += rows.length
      state.step++
      if (state.step % BATCH_REPORT_EVERY === 0)
        p.emit({ type: 'batch', epoch, step: state.step, loss: batchLoss, accuracy: batchAccuracy })
      const now = performance.now()
      if (now - lastProgress >= progressInterval) {
        lastProgress = now
        p.emit({
          type: 'progress',
          epoch,
          totalEpochs: p.totalEpochs,
          step: state.step,
          totalSteps,
          samplesPerSecond: Math.round((seenHere / Math.max(now - epochStart, 1)) * 1000),
        })
      }
      // Let the IPC channel deliver a cancel; a turn of the event loop per batch costs throughput, so
      // yield at most every 20 ms (cancel still lands within one batch plus 20 ms).
      if (now - lastYield >= 20) {
        lastYield = now
        await yieldToEventLoop()
      }
      if (p.isCancelled()) {
        p.emit({
          type: 'event',
          level: 'info',
          message: `cancelled at epoch ${epoch}, step ${state.step}`,
          data: { epoch, step: state.step },
        })
        return 'cancelled'
      }
      if (p.isPaused?.()) {
        const position: EpochPosition = { orderRngState, batches: s + 1, lossSum, correctSum, seen }
        const partial: EpochMetrics = { loss: lossSum / seen, accuracy: correctSum / seen }
        const dir = await p.checkpoint(epoch, partial, position)
        p.emit({ type: 'checkpoint', epoch, step: state.step, dir, metrics: partial, midEpoch: true })
        p.emit({
          type: 'event',
          level: 'info',
          message: `paused at epoch ${epoch}, step ${state.step} (batch ${s + 1} of ${stepsPerEpoch}): mid-epoch checkpoint written`,
          data: { epoch, step: state.step, batch: s + 1, batches: stepsPerEpoch },
        })
        return 'paused'
      }
    }
    const metrics: EpochMetrics = { loss: lossSum / seen, accuracy: correctSum / seen }
    if (p.val) {
      const v = lossAndAccuracy(await predictPart(tf, p.forward, p.val, k), partLabels(p.val), k)
      metrics.val_loss = v.loss
      metrics.val_accuracy = v.accuracy
    }
    state.epoch = epoch
    p.emit({ type: 'epoch', epoch, step: state.step, metrics })
    let stop = false
    if (es) {
      const value =
        es.monitor === 'val_loss' ? (metrics.val_loss ?? metrics.loss) : (metrics.val_accuracy ?? metrics.accuracy)
      if (improved(es, state.best, value)) {
        state.best = value
        state.bestEpoch = epoch
        state.wait = 0
        p.bestSnapshot.weights = await snapshotWeights(p.model)
      } else {
        state.wait++
        stop = state.wait >= es.patience
      }
    }
    const dir = await p.checkpoint(epoch, metrics)
    p.emit({ type: 'checkpoint', epoch, step: state.step, dir, metrics })
    p.onEpochEnd?.(epoch)
    if (stop) {
      p.emit({
        type: 'event',
        level: 'info',
        message: `early stopping at epoch ${epoch}: ${es!.monitor} has not improved by more than ${es!.min_delta} for ${es!.patience} epochs; best epoch ${state.bestEpoch} (${es!.monitor} ${state.best})`,
        data: { epoch, best_epoch: state.bestEpoch, best: state.best, monitor: es!.monitor },
      })
      return 'early_stopped'
    }
  }
  return 'completed'
}

/** Restores the best epoch's weights (early stopping) and reports which epoch that was. */
export function restoreBest(
  p: Pick<LoopParams, 'tf' | 'emit' | 'model' | 'bestSnapshot' | 'state' | 'earlyStopping'>,
): void {
  if (!p.earlyStopping || !p.bestSnapshot.weights || p.state.bestEpoch === null) return
  if (p.state.bestEpoch !== p.state.epoch) restoreWeights(p.tf, p.model, p.bestSnapshot.weights)
  p.emit({
    type: 'event',
    level: 'info',
    message: `restored the weights of epoch ${p.state.bestEpoch}, the best by ${p.earlyStopping.monitor} (${p.state.best})`,
    data: { best_epoch: p.state.bestEpoch, best: p.state.best, monitor: p.earlyStopping.monitor },
  })
}

/** A fresh loop state for a new job. */
export function newLoopState(): LoopState {
  return {
    phase: 1,
    phaseStartEpoch: 1,
    epoch: 0,
    step: 0,
    trainedSamples: 0,
    best: null,
    bestEpoch: null,
    bestCheckpointDir: null,
    wait: 0,
  }
}

/** The loop fields of a checkpoint's state.json. */
export function loopStateFrom(s: CheckpointState): LoopState {
  return {
    phase: s.phase,
    phaseStartEpoch: s.phaseStartEpoch,
    epoch: s.epoch,
    step: s.step,
    trainedSamples: s.trainedSamples,
    best: s.best,
    bestEpoch: s.bestEpoch,
    bestCheckpointDir: s.bestCheckpointDir,
    wait: s.wait,
    inEpoch: s.inEpoch ?? null,
  }
}

/** Seed of the generator for shuffles and dropout masks (the split uses `seed` itself). */
export function trainingSeed(seed: number): number {
  return (Math.imul(seed | 0, 0x9e3779b1) ^ 0x5eed1e55) | 0
}

/** The train/validation parts: a validation file when given, else a seeded `validation_split` of the training rows. */
export function splitParts(
  trainSource: InputSource,
  trainLabels: Int32Array,
  rows: number,
  validationSplit: number,
  seed: number,
  validation?: { source: InputSource; labels: Int32Array; rows: number },
): { train: Part; val: Part | null } {
  if (validation) {
    return {
      train: { source: trainSource, rows: Int32Array.from({ length: rows }, (_, i) => i), labels: trainLabels },
      val: {
        source: validation.source,
        rows: Int32Array.from({ length: validation.rows }, (_, i) => i),
        labels: validation.labels,
      },
    }
  }
  const order = shuffledIndices(rows, mulberry32(seed))
  const nVal = Math.min(Math.max(0, Math.round(rows * validationSplit)), rows - 1)
  return {
    train: { source: trainSource, rows: order.slice(nVal), labels: trainLabels },
    val: nVal > 0 ? { source: trainSource, rows: order.slice(0, nVal), labels: trainLabels } : null,
  }
}

/** What resuming from a checkpoint restored into the model, for `runPhases`. */
export interface Resumed {
  dir: string
  checkpoint: CheckpointState
  bestWeights: WeightSnapshot | null
}

/**
 * Loads a checkpoint of this job into `model` (weights by layer name), and the best epoch's weights when early
 * stopping had one; call before anything is computed from the model's weights (cached features).
 */
export async function resumeInto(tf: Tf, model: LayersModel, dir: string): Promise<Resumed> {
  const checkpoint = await readCheckpointState(dir)
  let bestWeights: WeightSnapshot | null = null
  const bestDir = checkpoint.bestCheckpointDir
  // a mid-epoch checkpoint's weights are never the best epoch's: those are in the best epoch's checkpoint
  const midEpoch = !!checkpoint.inEpoch
  if (
    bestDir &&
    (midEpoch || checkpoint.bestEpoch !== checkpoint.epoch) &&
    existsSync(path.join(bestDir, 'model.json'))
  ) {
    await copyWeightsByName(tf, model, bestDir)
    bestWeights = await snapshotWeights(model)
  }
  const copied = await copyWeightsByName(tf, model, dir)
  const missing = model.layers.filter((l) => l.weights.length > 0 && !copied.includes(l.name)).map((l) => l.name)
  if (missing.length > 0)
    throw new EngineError(
      'checkpoint_invalid',
      `checkpoint ${dir} lacks weights for layers ${missing.join(', ')}`,
      true,
    )
  if (!midEpoch && checkpoint.bestEpoch === checkpoint.epoch) bestWeights = await snapshotWeights(model)
  return { dir, checkpoint, bestWeights }
}

/** One training phase of a job (transfer: head on cached features, then fine-tuning; others: one phase). */
export interface Phase {
  forward: (x: Tensor) => Tensor
  variables: Variable[]
  /** the model whose forward pass `forward` is, when the whole step may run as a TensorFlow graph (train-step.ts) */
  graphModel?: LayersModel
  train: Part
  val: Part | null
  epochs: number
  learningRate: number
}

/** Options of `runPhases`. */
export interface PhasesOptions {
  tf: Tf
  emit: (m: ChildMessage) => void
  isCancelled: () => boolean
  isPaused?: () => boolean
  /** the model that is checkpointed and saved (weights shared with the phases' forward passes) */
  model: LayersModel
  /** phases still to build lazily: index 0 is phase 1 */
  phases: (() => Phase | Promise<Phase>)[]
  hyperparameters: TrainHyperparameters
  seed: number
  outputDir: string
  numClasses: number
  classes: string[]
  method: string
  /** metadata.json of checkpoints */
  metadata: () => ModelMetadata
  resumed?: Resumed | null
  soft?: LoopParams['soft']
  progressIntervalMs?: number
  onEpochEnd?: (epoch: number) => void
  /** the active backend and the graph setting: whether a phase's whole step may run as a graph */
  backend?: BackendName
  graph?: GraphSettings
}

/** The run-wide part of `runPhases`' options, as every method passes it on from its own options. */
export function runSettings(
  o: Pick<
    PhasesOptions,
    | 'tf'
    | 'emit'
    | 'isCancelled'
    | 'isPaused'
    | 'hyperparameters'
    | 'seed'
    | 'outputDir'
    | 'progressIntervalMs'
    | 'onEpochEnd'
    | 'backend'
    | 'graph'
  >,
) {
  const { tf, emit, isCancelled, isPaused, hyperparameters, seed, outputDir, progressIntervalMs, onEpochEnd } = o
  const { backend, graph } = o
  return {
    tf,
    emit,
    isCancelled,
    isPaused,
    hyperparameters,
    seed,
    outputDir,
    progressIntervalMs,
    onEpochEnd,
    backend,
    graph,
  }
}

/**
 * The phase's compiled training step, or null to train eagerly; either way the job's events say which and
 * why (once per phase).
 */
async function phaseTrainStep(o: PhasesOptions, phase: Phase): Promise<GraphTrainStep | null> {
  const { tf, hyperparameters: hp } = o
  const backend = o.backend ?? (tf.getBackend() as BackendName)
  let why: EagerReason
  if (!phase.graphModel) return null
  if ((o.graph ?? DEFAULT_GRAPH_SETTINGS).mode === 'off') why = { layer: null, reason: 'REFIT_FROZEN_GRAPH=off' }
  else if (backend !== 'tensorflow' || typeof (tf as any).node?.loadSavedModel !== 'function')
    why = { layer: null, reason: `backend ${backend} has no TensorFlow graph sessions` }
  else {
    let compiled: GraphTrainStep | EagerReason
    try {
      compiled = await compileTrainStep(tf, {
        model: phase.graphModel,
        variables: phase.variables,
        optimizer: hp.optimizer,
        learningRate: phase.learningRate,
        numClasses: o.numClasses,
        soft: o.soft ?? null,
      })
    } catch (err) {
      compiled = { layer: null, reason: `graph compile failed: ${(err as Error).message}` }
    }
    if (compiled instanceof GraphTrainStep) {
      o.emit({
        type: 'event',
        level: 'info',
        message: `training step: graph (forward, gradients and ${hp.optimizer ?? 'adam'} update in one TensorFlow graph, compiled in ${compiled.compileMs} ms)`,
        data: { train_step: 'graph', graph_compile_ms: compiled.compileMs },
      })
      return compiled
    }
    why = compiled
  }
  o.emit({
    type: 'event',
    level: why.layer ? 'warn' : 'info',
    message: `training step: eager (${why.layer ? `layer "${why.layer}", ` : ''}${why.reason})`,
    data: { train_step: 'eager', train_step_reason: why.reason, ...(why.layer ? { eager_layer: why.layer } : {}) },
  })
  return null
}

/** Outcome of `runPhases`: the loop state, and the last phase run (its forward and validation part). */
export interface PhasesResult {
  end: LoopEnd
  state: LoopState
  last: Phase | null
}

/** Runs the phases (or what remains of them after a resume) with checkpoints and early stopping. */
export async function runPhases(o: PhasesOptions): Promise<PhasesResult> {
  const { tf, hyperparameters: hp } = o
  const rng = new Rng(trainingSeed(o.seed))
  let state = newLoopState()
  const bestSnapshot: { weights: WeightSnapshot | null } = { weights: null }
  const r = o.resumed
  if (r) {
    state = loopStateFrom(r.checkpoint)
    rng.state = r.checkpoint.rng_state
    bestSnapshot.weights = r.bestWeights
    o.emit({
      type: 'event',
      level: 'info',
      message: state.inEpoch
        ? `resumed from the mid-epoch checkpoint of epoch ${state.epoch + 1} (step ${state.step})`
        : `resumed from the checkpoint of epoch ${state.epoch} (step ${state.step})`,
      data: { epoch: state.epoch, step: state.step, dir: r.dir },
    })
  }
  let optimizer: OptimizerState | null = null
  const es = hp.early_stopping ?? null
  const checkpoint = async (epoch: number, metrics: EpochMetrics, position?: EpochPosition): Promise<string> => {
    const dir = path.join(o.outputDir, 'checkpoints', position ? `step-${state.step}` : `epoch-${epoch}`)
    if (!position && state.bestEpoch === epoch) state.bestCheckpointDir = dir
    const cs: CheckpointState = {
      ...state,
      inEpoch: position ?? null,
      rng_state: rng.state,
      seed: o.seed,
      method: o.method,
      hyperparameters: hp,
      classes: o.classes,
      metrics,
    }
    await writeCheckpoint(
      tf,
      dir,
      o.model,
      { ...o.metadata(), checkpoint: { epoch, step: state.step, metrics, ...(position ? { mid_epoch: true } : {}) } },
      optimizer!,
      cs,
    )
    return dir
  }
  let last: Phase | null = null
  let end: LoopEnd = 'completed'
  for (let i = state.phase - 1; i < o.phases.length; i++) {
    const resumingThisPhase = r && r.checkpoint.phase === i + 1
    if (i + 1 > state.phase) {
      state.phase = i + 1
      state.phaseStartEpoch = state.epoch + 1
      state.wait = 0
    }
    const phase = await o.phases[i]()
    last = phase
    const lastEpoch = state.phaseStartEpoch + phase.epochs - 1
    const phaseOver = state.epoch >= lastEpoch || (es !== null && state.wait >= es.patience)
    if (phaseOver) {
      // the uninterrupted run restored the best weights when this phase ended; do the same
      if (es && bestSnapshot.weights && state.bestEpoch !== state.epoch)
        restoreWeights(tf, o.model, bestSnapshot.weights)
      continue
    }
    const graphStep = await phaseTrainStep(o, phase)
    optimizer = graphStep ?? makeOptimizer(tf, hp.optimizer, phase.learningRate)
    if (resumingThisPhase) await restoreOptimizer(tf, optimizer, r!.dir)
    const totalEpochs = o.phases.length === 1 ? lastEpoch : Math.max(lastEpoch, hp.n_epochs)
    const params: LoopParams = {
      tf,
      emit: o.emit,
      isCancelled: o.isCancelled,
      isPaused: o.isPaused,
      forward: phase.forward,
      variables: phase.variables,
      optimizer,
      graphStep,
      numClasses: o.numClasses,
      train: phase.train,
      val: phase.val,
      batchSize: hp.batch_size,
      lastEpoch,
      totalEpochs,
      rng,
      state,
      earlyStopping: es,
      soft: o.soft,
      model: o.model,
      bestSnapshot,
      checkpoint,
      progressIntervalMs: o.progressIntervalMs,
      onEpochEnd: o.onEpochEnd,
    }
    end = await runEpochs(params)
    optimizer.dispose()
    optimizer = null
    if (end === 'cancelled' || end === 'paused') return { end, state, last }
    restoreBest(params)
  }
  return { end, state, last }
}

/** Options every method takes; datasets are already loaded (images at the model's height/width). */
export interface RunOptions {
  tf: Tf
  train: LoadedDataset
  validation?: LoadedDataset
  hyperparameters: TrainHyperparameters
  seed: number
  outputDir: string
  emit: (message: ChildMessage) => void
  isCancelled: () => boolean
  /** pause requested: checkpoint mid-epoch at the end of the batch and stop (`paused` in the result) */
  isPaused?: () => boolean
  backend?: BackendName
  /** continue this job from one of its checkpoint directories */
  resumeFrom?: { checkpointDir: string } | null
  /** start from another job's checkpoint weights (layers matched by name and shape) */
  initFrom?: { checkpointDir: string } | null
  /** minimum time between two `progress` messages; default 250 ms */
  progressIntervalMs?: number
  /** called after each epoch's checkpoint, with the epoch number (tests use it to watch tensor counts) */
  onEpochEnd?: (epoch: number) => void
  /** frozen forward passes (backbone features, teacher outputs) as TensorFlow graphs; default: auto, no disk cache */
  graph?: GraphSettings
}

/** What a run produced; `modelDir` is null when cancelled. */
export interface RunResult {
  modelDir: string | null
  evaluation: Evaluation | null
  trainedSamples: number
  cancelled: boolean
  /** stopped by a pause, after a mid-epoch checkpoint (then `cancelled` too: no model) */
  paused?: boolean
  /** with early stopping, the epoch whose weights were saved */
  bestEpoch: number | null
}

/** Throws `too_few_classes` / `too_few_samples` (permanent) for data that cannot train a classifier. */
export function checkTrainable(train: LoadedDataset): void {
  if (train.classes.length < 2)
    throw new EngineError('too_few_classes', `need at least 2 classes, got ${train.classes.length}`, true)
  if (train.rows < 2)
    throw new EngineError('too_few_samples', `need at least 2 training samples, got ${train.rows}`, true)
}

/** Copies initFrom weights into `model`, reporting which layers took them. */
export async function applyInitFrom(
  tf: Tf,
  model: LayersModel,
  init: { checkpointDir: string } | null | undefined,
  emit: (m: ChildMessage) => void,
): Promise<void> {
  if (!init) return
  if (!existsSync(path.join(init.checkpointDir, 'model.json')))
    throw new EngineError('checkpoint_invalid', `no model.json in ${init.checkpointDir}`, true)
  const copied = await copyWeightsByName(tf, model, init.checkpointDir)
  emit({
    type: 'event',
    level: copied.length > 0 ? 'info' : 'warn',
    message: `initialized ${copied.length} layers from ${init.checkpointDir}`,
    data: { layers: copied },
  })
}

/** Models sharing layers each hold a reference; the last dispose frees a layer, later ones may throw harmlessly. */
export function disposeShared(models: LayersModel[]): void {
  for (const m of models) {
    try {
      m.dispose()
    } catch {
      // already freed through a model sharing its layers
    }
  }
}

/** Validation evaluation (when there is validation data) and the saved model directory. */
export async function finishRun(
  tf: Tf,
  o: RunOptions,
  model: LayersModel,
  result: PhasesResult,
  classes: string[],
  metadata: (evaluation: Evaluation | null) => ModelMetadata,
): Promise<RunResult> {
  const bestEpoch = o.hyperparameters.early_stopping ? result.state.bestEpoch : null
  if (result.end === 'cancelled' || result.end === 'paused')
    return {
      modelDir: null,
      evaluation: null,
      trainedSamples: result.state.trainedSamples,
      cancelled: true,
      paused: result.end === 'paused',
      bestEpoch,
    }
  let evaluation: Evaluation | null = null
  const last = result.last
  if (last?.val) {
    const probs = await predictPart(tf, last.forward, last.val, classes.length)
    evaluation = evaluateProbabilities(probs, partLabels(last.val), classes, last.val.rows)
  }
  const modelDir = path.join(o.outputDir, 'model')
  await saveModel(tf, model, modelDir, {
    ...metadata(evaluation),
    backend: o.backend ?? tf.getBackend(),
    trained_samples: result.state.trainedSamples,
    seed: o.seed,
    hyperparameters: o.hyperparameters,
    best_epoch: bestEpoch,
    evaluation,
  })
  return { modelDir, evaluation, trainedSamples: result.state.trainedSamples, cancelled: false, bestEpoch }
}
