// The training process: forked by the worker, one per job (wasm memory never shrinks, tfjs-node cannot run in
// worker threads). It receives one `train` request over IPC, reports everything as ChildMessages and exits;
// a sweep trial's request may say `keepAlive`, and then, once done and clean, it says `idle` and waits for the
// next trial of its sweep with TensorFlow, the datasets and the features it read still loaded
// (workers/training-processes.ts). It never touches PostgreSQL or Redis. If the parent goes away, it exits at
// once: no orphan keeps training.
import { loadDataset } from '../../src/datasets/load.js'
import type { LoadedDataset } from '../../src/datasets/types.js'
import { checkCapabilities, type SelectedBackend, selectBackend } from '../../src/engine/backend.js'
import { runDistillation } from '../../src/engine/distillation.js'
import { EngineError } from '../../src/engine/errors.js'
import { openFeatureCache } from '../../src/engine/feature-cache.js'
import { graphModelOf } from '../../src/engine/graph/graph-transfer.js'
import { keptForNextJob } from '../../src/engine/kept-for-next-job.js'
import { PRESET_MAX_IMAGE_SIDE } from '../../src/engine/memory-estimate.js'
import { readMetadata, readTopology } from '../../src/engine/model-io.js'
import type {
  BackendName,
  ChildMessage,
  ModelMetadata,
  ParentMessage,
  TrainRequest,
} from '../../src/engine/protocol.js'
import { runSupervised } from '../../src/engine/supervised.js'
import type { RunResult } from '../../src/engine/training.js'
import { runTransfer } from '../../src/engine/transfer.js'
import { runTransferOnCachedFeatures, servableFromCache } from '../../src/engine/transfer-cached.js'
import { CannotComposeFiles } from '../../src/engine/whole-model-files.js'
import { clipMiddle } from '../../src/lib/clip.js'

let cancelRequested = false
/** a pause: checkpoint mid-epoch at the end of the batch, then stop */
let pauseRequested = false
/** a request is being served (a probe or a job); another waits for `idle` */
let busy = false
/** the job a kept process finished last: a cancel or pause for it that arrives while idle is stale */
let finishedJobId: string | null = null
let finishing = false

/** The backend, picked and self-tested once per process (a kept process's next job takes it as it is). */
let selected: { preferred: string; backend: Promise<SelectedBackend>; held: string } | null = null
async function backendFor(preferred: TrainRequest['backend']): Promise<SelectedBackend> {
  if (selected?.preferred !== preferred) {
    const backend = selectBackend(preferred)
    selected = { preferred, backend, held: '' }
    // what the process holds between jobs: a job that leaves more behind makes it unfit for another
    selected.held = held((await backend).tf)
  }
  return selected.backend
}

/** Tensors and SavedModel sessions alive in the process. */
function held(tf: SelectedBackend['tf']): string {
  const sessions = (tf as { node?: { getNumOfSavedModels?: () => number } }).node?.getNumOfSavedModels?.() ?? 0
  return `${tf.memory().numTensors} tensors, ${sessions} sessions`
}

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve()
    process.send(message, undefined, {}, () => resolve())
  })
}

/** Maps any failure to the protocol's error message: stable snake_case code, permanent or retryable. */
export function toErrorMessage(err: unknown): Extract<ChildMessage, { type: 'error' }> {
  const m = classify(err)
  return { ...m, message: clip(m.message) }
}

/** An error's message can quote whole inputs (a model.json of 100 KB): the job keeps its head and tail. */
const clip = (s: string) => clipMiddle(s, 2000)

function classify(err: unknown): Extract<ChildMessage, { type: 'error' }> {
  if (err instanceof EngineError)
    return { type: 'error', code: err.code, message: err.message, permanent: err.permanent }
  const e = err as { name?: string; code?: unknown; message?: string }
  if (e?.name === 'DatasetValidationError' && typeof e.code === 'string') {
    return { type: 'error', code: e.code, message: e.message ?? 'invalid dataset', permanent: true }
  }
  if (e?.code === 'ENOENT')
    return { type: 'error', code: 'file_not_found', message: e.message ?? 'file not found', permanent: false }
  return { type: 'error', code: 'training_failed', message: e?.message ?? String(err), permanent: false }
}

async function finish(message: ChildMessage, exitCode: number): Promise<never> {
  finishing = true
  await send(message)
  if (process.connected) process.disconnect()
  process.exit(exitCode)
}

/** Refuses a method the backend cannot train, before any data is loaded (the engine checks again). */
async function precheck(req: TrainRequest, backend: BackendName): Promise<void> {
  if (!req.baseModelDir) return
  const reason = checkCapabilities(backend, await readTopology(req.baseModelDir), req.method)
  if (reason) throw new EngineError('backend_cannot_train', reason, true)
}

async function train(req: TrainRequest): Promise<void> {
  keptForNextJob.startJob(req.keepAlive === true)
  const selected = await backendFor(req.backend)
  await send({ type: 'backend', backend: selected.backend, selfTest: selected.selfTest })
  for (const r of selected.rejected) {
    await send({ type: 'event', level: 'warn', message: `backend ${r.backend} rejected: ${r.reason}`, data: { ...r } })
  }
  const method = req.method ?? { type: 'transfer' }
  if (!req.baseModelDir && !(req.architecture && method.type !== 'transfer'))
    throw new EngineError(
      'invalid_request',
      `${method.type} needs baseModelDir${method.type === 'transfer' ? '' : ' or architecture'}`,
      true,
    )
  // images load at the trained model's height/width (an architecture takes the file's own size)
  const meta = req.baseModelDir ? await readMetadata(req.baseModelDir) : null
  // a TF.js graph-model base has no layers topology to check
  const graphBase = meta !== null && graphModelOf(meta) !== null
  if (!graphBase) await precheck(req, selected.backend)
  const shapeOf = (m: ModelMetadata | null) =>
    m && m.input_shape.length === 3 ? (m.input_shape as [number, number, number]) : undefined
  const imageShape = shapeOf(meta)
  // a preset is sized from the images: larger ones are scaled down to fit first, so its network stays bounded
  const load = (spec: TrainRequest['training'], shape = imageShape): Promise<LoadedDataset> => {
    const options = { ...spec.options, ...(shape ? { imageShape: shape } : { fitWithin: PRESET_MAX_IMAGE_SIDE }) }
    return keptForNextJob.get(
      `dataset:${JSON.stringify([spec.path, spec.format, options])}`,
      () => loadDataset(spec.path, spec.format, options),
      `${spec === req.validation ? 'validation' : 'training'} dataset`,
    )
  }
  const featureCache = method.type === 'transfer' ? await openFeatureCache(req, send) : null
  await sayReused()
  if (method.type === 'transfer' && featureCache) {
    const served = await trainOnCachedFeatures(req, method, featureCache, selected)
    if (served) return finishDone(req, served)
  }
  const t0 = performance.now()
  const trainDs = await load(req.training)
  // validation images at the training images' size (a preset's network is sized from those)
  const trainShape = trainDs.kind === 'image' ? (trainDs.sampleShape as [number, number, number]) : undefined
  const validationDs = req.validation ? await load(req.validation, imageShape ?? trainShape) : undefined
  await sayReused()
  await send({
    type: 'event',
    level: 'info',
    message: `loaded ${trainDs.rows} training samples${validationDs ? ` and ${validationDs.rows} validation samples` : ''}`,
    data: {
      train_rows: trainDs.rows,
      validation_rows: validationDs?.rows ?? 0,
      classes: trainDs.classes,
      ms: Math.round(performance.now() - t0),
    },
  })
  const common = {
    tf: selected.tf,
    backend: selected.backend,
    baseModelId: req.baseModelId ?? null,
    train: trainDs,
    validation: validationDs,
    hyperparameters: req.hyperparameters,
    seed: req.seed,
    outputDir: req.outputDir,
    resumeFrom: req.resumeFrom ?? null,
    initFrom: req.initFrom ?? null,
    emit: (m: ChildMessage) => void send(m),
    isCancelled: () => cancelRequested,
    isPaused: () => pauseRequested,
    graph: req.graph,
  }
  let result: RunResult
  if (method.type === 'transfer') {
    result = await runTransfer({
      ...common,
      baseModelDir: req.baseModelDir!,
      method,
      featureCache: featureCache ?? undefined,
    })
  } else if (method.type === 'supervised') {
    result = await runSupervised({ ...common, baseModelDir: req.baseModelDir, architecture: req.architecture })
  } else {
    const teacherMeta = await readMetadata(method.teacherModelDir)
    const teacherShape = shapeOf(teacherMeta)
    const studentShape =
      imageShape ?? (trainDs.kind === 'image' ? (trainDs.sampleShape as [number, number, number]) : undefined)
    const sameShape =
      !teacherShape || !studentShape || teacherShape.slice(0, 2).join() === studentShape.slice(0, 2).join()
    result = await runDistillation({
      ...common,
      baseModelDir: req.baseModelDir,
      architecture: req.architecture,
      teacherModelDir: method.teacherModelDir,
      teacherModelId: method.teacherModelId ?? null,
      temperature: method.temperature,
      alpha: method.alpha,
      teacherTrain: sameShape ? undefined : await load(req.training, teacherShape),
    })
  }
  await finishDone(req, result)
}

/** The job's event for what it took from the previous trial's memory (a kept process), once per value. */
async function sayReused(): Promise<void> {
  const reused = keptForNextJob.takeReused()
  if (reused.length)
    await send({
      type: 'event',
      level: 'info',
      message: `${reused.join(' and ')} from this process's memory: read by the previous trial, not read again`,
      data: { reused },
    })
}

/** Reports the result; then exits, or (keepAlive, nothing left over) says `idle` and waits for the next job. */
async function finishDone(req: TrainRequest, result: RunResult): Promise<void> {
  const done: ChildMessage = {
    type: 'done',
    modelDir: result.modelDir ?? '',
    evaluation: result.evaluation,
    trainedSamples: result.trainedSamples,
    cancelled: result.cancelled,
    paused: result.paused ?? false,
    bestEpoch: result.bestEpoch,
  }
  keptForNextJob.endJob()
  if (!req.keepAlive) return finish(done, 0)
  const now = held((await selected!.backend).tf)
  if (now !== selected!.held) {
    await send({
      type: 'event',
      level: 'warn',
      message: `training process not kept for the sweep's next trial: it holds ${now} after the job, ${selected!.held} before`,
    })
    return finish(done, 0)
  }
  await send(done)
  // a cancel or pause sent for the next job before its `train` must hold: reset now, not when it starts
  cancelRequested = false
  pauseRequested = false
  finishedJobId = req.jobId
  busy = false
  await send({ type: 'idle' })
}

/**
 * A head-only transfer job whose every dataset has verified cached features: trained without decoding an
 * image or loading the backbone. Null when the job needs more (a fine_tune phase, initFrom weights, a dataset
 * not cached, a base model whose files cannot be composed), and then the ordinary path runs.
 */
async function trainOnCachedFeatures(
  req: TrainRequest,
  method: Extract<TrainRequest['method'], { type: 'transfer' }>,
  cache: NonNullable<Awaited<ReturnType<typeof openFeatureCache>>>,
  selected: Awaited<ReturnType<typeof selectBackend>>,
): Promise<RunResult | null> {
  if (!cache.train || (req.validation && !cache.validation) || !req.baseModelDir) return null
  if (!servableFromCache(method, req.initFrom)) return null
  try {
    return await runTransferOnCachedFeatures({
      tf: selected.tf,
      backend: selected.backend,
      baseModelDir: req.baseModelDir,
      baseModelId: req.baseModelId ?? null,
      method,
      train: cache.train,
      validation: cache.validation ?? undefined,
      hyperparameters: req.hyperparameters,
      seed: req.seed,
      outputDir: req.outputDir,
      resumeFrom: req.resumeFrom ?? null,
      emit: (m: ChildMessage) => void send(m),
      isCancelled: () => cancelRequested,
      isPaused: () => pauseRequested,
    })
  } catch (err) {
    if (!(err instanceof CannotComposeFiles)) throw err
    await send({
      type: 'event',
      level: 'warn',
      message: `cached features not used: the base model's files cannot be composed without loading it (${err.message})`,
    })
    return null
  }
}

function fail(err: unknown): void {
  if (finishing) process.exit(1)
  void finish(toErrorMessage(err), 1)
}

if (!process.send) {
  console.error('training-child must be started with child_process.fork (no IPC channel)')
  process.exit(1)
}

process.on('message', (raw: ParentMessage) => {
  if ((raw?.type === 'cancel' || raw?.type === 'pause') && raw.jobId !== undefined && raw.jobId === finishedJobId) {
    // stale: sent for the job this process finished before it said `idle`
  } else if (raw?.type === 'cancel') {
    cancelRequested = true
  } else if (raw?.type === 'pause') {
    pauseRequested = true
  } else if (raw?.type === 'probe' && !busy) {
    busy = true
    backendFor(raw.backend)
      .then(async (selected) => {
        for (const r of selected.rejected)
          await send({
            type: 'event',
            level: 'warn',
            message: `backend ${r.backend} rejected: ${r.reason}`,
            data: { ...r },
          })
        await finish({ type: 'backend', backend: selected.backend, selfTest: selected.selfTest }, 0)
      })
      .catch(fail)
  } else if (raw?.type === 'train' && !busy) {
    busy = true
    train(raw).catch(fail)
  }
})
// The parent (worker) died or closed the channel: stop now, the job will be rerun from its record.
process.on('disconnect', () => {
  if (!finishing) process.exit(1)
})
process.on('uncaughtException', fail)
process.on('unhandledRejection', fail)
