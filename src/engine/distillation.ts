// Knowledge distillation (Hinton et al. 2015): a student (architecture preset or model directory) learns from
// the labels and from a teacher's probabilities softened at temperature T:
//   loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels, student)
// The teacher runs once over the training rows (bounded batches) and its soft targets are cached; the saved
// student outputs ordinary softmax probabilities (T = 1).
import type { LoadedDataset } from '../datasets/types.js'
import { EngineError } from './errors.js'
import { type FrozenForward, forwardEventData, frozenForward, frozenForwardEvent } from './graph/forward.js'
import { graphModelForward, isGraphModelMeta } from './graph/graph-model-forward.js'
import { loadModel, readMetadata } from './model-io.js'
import { checkCompatible, preprocessRows } from './preprocess.js'
import type { MethodSpec, ModelMetadata } from './protocol.js'
import { type ModelSource, prepareTrainee, trainAllLayers } from './supervised.js'
import type { LayersModel, Tf } from './tf.js'
import {
  applyInitFrom,
  forwardBatchSize,
  type RunOptions,
  type RunResult,
  resumeInto,
  yieldToEventLoop,
} from './training.js'

/** Options of a distillation run; the student is `baseModelDir` or `architecture`. */
export interface DistillationOptions extends RunOptions, ModelSource {
  teacherModelDir: string
  /** id of the teacher (built-in id or model id), recorded in the metadata */
  teacherModelId?: string | null
  temperature: number
  alpha: number
  /** the training file loaded at the teacher's image size when it differs from the student's; default `train` */
  teacherTrain?: LoadedDataset
  /** samples per teacher forward pass; default by input size (forwardBatchSize) */
  teacherBatchSize?: number
}

/**
 * The teacher's probabilities at temperature T for `rows` of `ds`, as a [ds.rows, k] array (other rows zero),
 * columns in `classes` order. Computed in batches; the teacher's logits are taken as the log of its softmax
 * output: log p = z - logsumexp(z) differs from the logits z by a per-row constant, and softmax(x / T) is
 * unchanged when a constant is added to a row of x, so softmax(log(p) / T) = softmax(z / T) exactly. (Only
 * probabilities that underflowed to 0 lose information: they are clipped at 1e-30.)
 */
export async function teacherSoftTargets(
  tf: Tf,
  teacher: FrozenForward,
  meta: ModelMetadata,
  ds: LoadedDataset,
  rows: Int32Array,
  classes: string[],
  temperature: number,
  batchSize = 256,
  isCancelled: () => boolean = () => false,
): Promise<Float32Array | null> {
  const k = classes.length
  const teacherClasses = meta.classes ?? []
  const column = classes.map((c) => teacherClasses.indexOf(c))
  checkCompatible(ds, meta.input_shape)
  const out = new Float32Array(ds.rows * k)
  for (let start = 0; start < rows.length; start += batchSize) {
    if (isCancelled()) return null
    const batch = rows.subarray(start, Math.min(rows.length, start + batchSize))
    const probs = tf.tidy(() => {
      const x = tf.tensor(preprocessRows(ds, batch, meta.preprocessing, meta.input_shape), [
        batch.length,
        ...meta.input_shape,
      ])
      const p = teacher.apply(x)
      const logits = tf.log(tf.maximum(p, 1e-30))
      return tf.softmax(tf.div(logits, temperature))
    })
    const values = (await probs.data()) as Float32Array
    probs.dispose()
    const tk = teacherClasses.length
    for (let i = 0; i < batch.length; i++)
      for (let j = 0; j < k; j++) out[batch[i] * k + j] = values[i * tk + column[j]]
    await yieldToEventLoop()
  }
  return out
}

/** Trains the student with the distillation loss and saves it to `outputDir/model/`. */
export async function runDistillation(opts: DistillationOptions): Promise<RunResult> {
  const { tf, emit, temperature: T, alpha } = opts
  if (!(T > 0 && Number.isFinite(T) && alpha >= 0 && alpha <= 1))
    throw new EngineError('invalid_method', `invalid temperature ${T} or alpha ${alpha}`, true)
  const teacherMeta = await readMetadata(opts.teacherModelDir)
  const classes = opts.train.classes
  const tc = teacherMeta.classes
  if (!tc || tc.length !== classes.length || !classes.every((c) => tc.includes(c)))
    throw new EngineError(
      'teacher_classes_mismatch',
      `the teacher's classes [${tc ?? []}] differ from the training file's classes [${classes}]`,
      true,
    )
  const method: MethodSpec = { type: 'distillation', teacherModelDir: opts.teacherModelDir, temperature: T, alpha }
  const { trainee, dispose } = await prepareTrainee(opts, method)
  let teacher: LayersModel | null = null
  try {
    const { model } = trainee
    await applyInitFrom(tf, model, opts.initFrom, emit)
    const resumed = opts.resumeFrom ? await resumeInto(tf, model, opts.resumeFrom.checkpointDir) : null
    const t0 = performance.now()
    // a TF.js graph model (uploaded with classes, or fine-tuned on a graph base) teaches through its converted
    // graph; the API admits only graphs whose output is a Softmax, so its output is probabilities like a layers
    // teacher's
    const graphTeacher = isGraphModelMeta(teacherMeta)
    teacher = graphTeacher ? null : await loadModel(tf, opts.teacherModelDir)
    const forward = teacher
      ? await frozenForward(tf, { model: teacher, backend: opts.backend ?? tf.getBackend(), settings: opts.graph })
      : await graphModelForward(tf, {
          dir: opts.teacherModelDir,
          inputShape: teacherMeta.input_shape,
          backend: opts.backend ?? tf.getBackend(),
          settings: opts.graph,
        })
    emit(frozenForwardEvent('teacher', forward))
    const soft = await teacherSoftTargets(
      tf,
      forward,
      teacherMeta,
      opts.teacherTrain ?? opts.train,
      trainee.train.rows,
      classes,
      T,
      opts.teacherBatchSize ?? forwardBatchSize(teacherMeta.input_shape),
      opts.isCancelled,
    ).finally(() => forward.dispose())
    teacher?.dispose()
    teacher = null
    if (!soft) return { modelDir: null, evaluation: null, trainedSamples: 0, cancelled: true, bestEpoch: null }
    emit({
      type: 'event',
      level: 'info',
      message: `computed the teacher's soft targets at T=${T} for ${trainee.train.rows.length} samples`,
      data: {
        samples: trainee.train.rows.length,
        ms: Math.round(performance.now() - t0),
        temperature: T,
        ...forwardEventData(forward),
      },
    })
    const metadata = (): ModelMetadata => ({
      input_shape: trainee.inputShape,
      preprocessing: trainee.preprocessing,
      classes: [...classes],
      feature_layer: null,
      description: `${opts.architecture ?? opts.baseModelId ?? 'student'} distilled from ${opts.teacherModelId ?? 'a teacher'} (T=${T}, alpha=${alpha})`,
      method: 'distillation',
      distillation: { teacher: opts.teacherModelId ?? null, temperature: T, alpha },
      ...trainee.origin,
    })
    return await trainAllLayers(opts, trainee, {
      method: 'distillation',
      metadata,
      resumed,
      soft: { probs: soft, temperature: T, alpha },
    })
  } finally {
    teacher?.dispose()
    dispose()
  }
}
