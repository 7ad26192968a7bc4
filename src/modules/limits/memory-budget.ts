// Memory is budgeted before it is spent: a job, a model upload or a prediction whose estimate (from the
// model's topology and the file's stats, see engine/memory-estimate.ts) exceeds what one training or
// inference process may use is refused with a 400 that names both figures, before anything is queued or
// forked. The children's hard limit (lib/memory-watchdog.ts) catches what an estimate misses.
import type { Config } from '../../config.js'
import {
  analyzeTopology,
  estimateEvaluation,
  estimateInference,
  estimateJob,
  formatBytes,
  forwardBatchSize,
  type JobShape,
  type MemoryEstimate,
  type ModelShape,
  readModelShape,
  type Topology,
} from '../../engine/memory-estimate.js'
import type { ArchitectureId, OptimizerName } from '../../engine/protocol.js'
import { AppError, type ErrorCode } from '../../errors.js'
import type { File, Model } from '../../generated/prisma/client.js'
import type { Storage } from '../../storage/storage.js'
import type { StoredMethod } from '../jobs/methods.js'
import { modelCacheKey, modelDir } from '../models/models-service.js'

type ModelRow = Parameters<typeof modelCacheKey>[0]
type Budget = Pick<Config, 'trainingMemoryBytes' | 'inferenceMemoryBytes'>

/** Samples an inference process runs per forward pass (compute.ts predictProbabilities). */
export const PREDICTION_PASS_BATCH = 64
/** Most samples an evaluation process runs per forward pass (compute.ts evaluateDataset: fewer for large inputs, forwardBatchSize). */
export const EVALUATION_PASS_BATCH = 256

/** Model shapes by cache key (id@sha256): parsing a MobileNet model.json costs more than the check itself. */
const shapes = new Map<string, Promise<ModelShape>>()
const SHAPE_CACHE_SIZE = 64

/** The topology of a stored model (built-in, uploaded, fine-tuned), read once per stored version. */
export function storedModelShape(storage: Storage, model: ModelRow): Promise<ModelShape> {
  const key = modelCacheKey(model)
  let shape = shapes.get(key)
  if (!shape) {
    shape = modelDir(storage, model).then(readModelShape)
    shape.catch(() => shapes.delete(key))
    shapes.set(key, shape)
    if (shapes.size > SHAPE_CACHE_SIZE) shapes.delete(shapes.keys().next().value!)
  }
  return shape
}

function breakdown(e: MemoryEstimate): string {
  const parts: [string, number][] = [
    ['runtime', e.runtimeBytes],
    ['parameters', e.parameterBytes],
    ['gradients', e.gradientBytes],
    ['optimizer', e.optimizerBytes],
    ['activations', e.activationBytes],
    ['data', e.dataBytes],
  ]
  return parts
    .filter(([, b]) => b > 0)
    .map(([k, b]) => `${k} ${formatBytes(b)}`)
    .join(', ')
}

function refuse(code: ErrorCode, what: string, e: MemoryEstimate, limit: number, setting: string, hint: string) {
  return new AppError(
    code,
    `${what} is estimated to need ${formatBytes(e.totalBytes)} (${e.totalBytes} bytes: ${breakdown(e)}), more than the ${formatBytes(limit)} (${limit} bytes, ${setting}) one process may use. ${hint}`,
    {
      details: [
        { field: 'estimated_bytes', message: String(e.totalBytes) },
        { field: 'limit_bytes', message: String(limit) },
      ],
    },
  )
}

interface FileStats {
  rows?: number
  image_shape?: number[]
  feature_count?: number
  classes?: string[]
}

/** What the training process of this job will hold, from the rows the API has. */
export async function estimateJobMemory(
  storage: Storage,
  job: {
    model: Model
    teacher?: Model | null
    method: StoredMethod
    hyperparameters: { batch_size: number; optimizer?: OptimizerName }
    training: File
    validation?: File | null
  },
): Promise<MemoryEstimate | null> {
  const stats = job.training.stats as FileStats | null
  if (!stats?.rows) return null
  // a TF.js graph-model base (or teacher) is sized from its GraphDef (engine/graph/graph-memory.ts)
  const image = !!stats.image_shape
  const shape: JobShape = {
    method: job.method.type,
    base:
      job.model.kind === 'architecture'
        ? { preset: job.model.id as ArchitectureId }
        : await storedModelShape(storage, job.model as ModelRow),
    teacher: job.teacher ? await storedModelShape(storage, job.teacher as ModelRow) : undefined,
    file: {
      kind: image ? 'image' : 'tabular',
      imageShape: stats.image_shape,
      features: stats.feature_count,
      rows: stats.rows,
      classes: stats.classes?.length ?? 2,
    },
    validationRows: (job.validation?.stats as FileStats | null)?.rows ?? 0,
    batchSize: job.hyperparameters.batch_size,
    optimizer: job.hyperparameters.optimizer,
  }
  if (job.method.type === 'transfer') {
    shape.headUnits = job.method.transfer.head.hidden_units
    shape.fineTuneWhole = job.method.transfer.unfreeze_top_blocks > 0 && !!job.method.transfer.fine_tune
  }
  return estimateJob(shape)
}

/** Refuses a job whose training process would exceed TRAINING_MEMORY_BYTES. */
export async function assertJobFits(
  deps: { storage: Storage; config: Budget },
  job: Parameters<typeof estimateJobMemory>[1],
): Promise<MemoryEstimate | null> {
  const e = await estimateJobMemory(deps.storage, job)
  const limit = deps.config.trainingMemoryBytes
  if (e && e.totalBytes > limit)
    throw refuse(
      'training_memory_exceeded',
      `This job (${job.method.type} ${job.model.id}, batch_size ${job.hyperparameters.batch_size})`,
      e,
      limit,
      'TRAINING_MEMORY_BYTES',
      'Lower batch_size, train on smaller images or choose a smaller model.',
    )
  return e
}

/** Refuses an uploaded model that one inference process cannot run on a single input. */
export function assertUploadFits(config: Budget, topology: Topology, inputShape: number[], params: number | null) {
  const e = estimateInference(analyzeTopology(topology, inputShape), 1, params ?? undefined)
  const limit = config.inferenceMemoryBytes
  if (e.totalBytes > limit)
    throw refuse(
      'inference_memory_exceeded',
      `This model (input ${inputShape.join('x')}) run on one input`,
      e,
      limit,
      'INFERENCE_MEMORY_BYTES',
      'Upload a model with a smaller input shape.',
    )
  return e
}

/** The inference estimate of `rows` inputs to a stored model (passes of PREDICTION_PASS_BATCH). */
export async function estimatePrediction(storage: Storage, model: ModelRow, rows: number): Promise<MemoryEstimate> {
  const m = await storedModelShape(storage, model)
  return estimateInference(
    analyzeTopology(m.topology, m.inputShape),
    rows,
    m.params ?? undefined,
    PREDICTION_PASS_BATCH,
  )
}

/** Refuses a predictions request one inference process cannot answer within INFERENCE_MEMORY_BYTES. */
export async function assertPredictionFits(deps: { storage: Storage; config: Budget }, model: ModelRow, rows: number) {
  const e = await estimatePrediction(deps.storage, model, rows)
  const limit = deps.config.inferenceMemoryBytes
  if (e.totalBytes > limit)
    throw refuse(
      'inference_memory_exceeded',
      `Predicting ${rows} input(s) with ${model.id}`,
      e,
      limit,
      'INFERENCE_MEMORY_BYTES',
      rows > 1 ? 'Send fewer inputs per request.' : 'This model cannot be run here; use one with a smaller input.',
    )
  return e
}

/**
 * Refuses an evaluation whose process would exceed TRAINING_MEMORY_BYTES: evaluations run on the workers,
 * under the training processes' hard limit, so they are held to the same budget before they are queued.
 */
export async function assertEvaluationFits(
  deps: { storage: Storage; config: Budget },
  model: ModelRow,
  file: File,
): Promise<MemoryEstimate | null> {
  const stats = file.stats as FileStats | null
  if (!stats?.rows) return null
  const m = await storedModelShape(deps.storage, model)
  const image = stats.image_shape
  const e = estimateEvaluation(
    analyzeTopology(m.topology, m.inputShape),
    stats.rows,
    image
      ? { elements: image.reduce((a, b) => a * b, 1), bytesPerValue: 1 }
      : { elements: stats.feature_count ?? 0, bytesPerValue: 4 },
    m.params ?? undefined,
    forwardBatchSize(m.inputShape, EVALUATION_PASS_BATCH),
  )
  const limit = deps.config.trainingMemoryBytes
  if (e.totalBytes > limit)
    throw refuse(
      'evaluation_memory_exceeded',
      `Evaluating ${model.id} on ${file.id} (${stats.rows} samples)`,
      e,
      limit,
      'TRAINING_MEMORY_BYTES',
      'Evaluate on a smaller file or with a smaller model.',
    )
  return e
}
