// Supervised training of every layer: a model directory (uploaded, built-in or fine-tuned; its output layer is
// replaced when its classes differ from the training file's) or an architecture preset from scratch. Tabular
// features are standardized with statistics of the training split, stored in metadata.json so inference
// preprocesses identically. Distillation trains its student through the same preparation.
import type { LoadedDataset } from '../datasets/types.js'
import { findArchitecture } from './architectures.js'
import { checkCapabilities } from './backend.js'
import { EngineError, incompatible } from './errors.js'
import { PRESET_MAX_IMAGE_SIDE } from './memory-estimate.js'
import { loadModelForTraining, readMetadata } from './model-io.js'
import { fitStandardization } from './preprocess.js'
import type { ArchitectureId, MethodSpec, ModelMetadata, Preprocessing } from './protocol.js'
import type { LayersModel, SymbolicTensor, Tf } from './tf.js'
import {
  applyInitFrom,
  checkTrainable,
  disposeShared,
  finishRun,
  logitsFn,
  type Part,
  type PhasesOptions,
  type RunOptions,
  type RunResult,
  rawSource,
  resumeInto,
  runPhases,
  runSettings,
  splitParts,
  trainableVariables,
  validateHyperparameters,
} from './training.js'
import { alignClasses } from './transfer-data.js'

/** The model to train: a directory, or a preset built from scratch. */
export interface ModelSource {
  baseModelDir?: string | null
  architecture?: ArchitectureId | null
  /** built-in id or model id of the base, recorded in the output metadata */
  baseModelId?: string | null
}

/** Options of a supervised run. */
export interface SupervisedOptions extends RunOptions, ModelSource {}

/** A model ready to train with its input contract, and the train/validation parts of the data. */
export interface Trainee {
  model: LayersModel
  inputShape: number[]
  preprocessing: Preprocessing
  train: Part
  val: Part | null
  classes: string[]
  /** what the model was built from, for metadata */
  origin: Record<string, unknown>
}

const IMAGE_PREPROCESSING: Preprocessing = { scale: 1 / 255, offset: 0, resize: true, channels: 'as_model' }

function sampleInputShape(ds: LoadedDataset): number[] {
  return ds.kind === 'image' ? [...ds.sampleShape] : [ds.sampleShape.reduce((a, b) => a * b, 1)]
}

/** A new softmax Dense for `k` classes on top of what fed the model's last layer. */
function replaceOutput(tf: Tf, model: LayersModel, k: number, seed: number): LayersModel {
  const out = model.outputs[0] as SymbolicTensor & { inputs?: SymbolicTensor[] }
  let below = out.inputs?.[0]
  if (!below) throw new EngineError('model_not_classifier', 'cannot find the input of the output layer', true)
  if (below.shape.length > 2) below = tf.layers.flatten({ name: 'refit_flatten' }).apply(below) as SymbolicTensor
  const taken = new Set(model.layers.map((l) => l.name))
  let name = 'refit_predictions'
  for (let i = 1; taken.has(name); i++) name = `refit_predictions_${i}`
  const y = tf.layers
    .dense({ name, units: k, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed }) })
    .apply(below) as SymbolicTensor
  return tf.model({ inputs: model.inputs, outputs: y, name: 'refit_supervised' })
}

/**
 * Builds (architecture) or loads (directory) the model, checks the backend can train it, splits the data and
 * fits the preprocessing. `method` is what the capability check judges (supervised or distillation).
 */
export async function prepareTrainee(
  opts: RunOptions & ModelSource,
  method: MethodSpec,
): Promise<{ trainee: Trainee; dispose: () => void }> {
  const { tf, train, hyperparameters: hp } = opts
  validateHyperparameters(hp)
  checkTrainable(train)
  const classes = train.classes
  const k = classes.length
  const validationDs = opts.validation ? alignClasses(opts.validation, classes) : undefined
  let model: LayersModel
  let inputShape: number[]
  let preprocessing: Preprocessing
  let origin: Record<string, unknown>
  const extra: LayersModel[] = []
  if (opts.architecture) {
    const arch = findArchitecture(opts.architecture)
    if (!arch) throw new EngineError('unknown_architecture', `unknown architecture ${opts.architecture}`, true)
    if (arch.inputs !== 'any' && arch.inputs !== train.kind)
      throw incompatible(`${arch.id} takes ${arch.inputs} samples, the training file has ${train.kind} samples`)
    inputShape = sampleInputShape(train)
    model = arch.build(tf, inputShape, k, opts.seed)
    preprocessing =
      train.kind === 'image'
        ? { ...IMAGE_PREPROCESSING, max_image_side: PRESET_MAX_IMAGE_SIDE }
        : { scale: 1, offset: 0, resize: false, channels: 'as_model' }
    origin = { architecture: arch.id }
  } else if (opts.baseModelDir) {
    const meta = await readMetadata(opts.baseModelDir)
    inputShape = meta.input_shape
    preprocessing = meta.preprocessing
    const loaded = await loadModelForTraining(tf, opts.baseModelDir)
    const same = Array.isArray(meta.classes) && meta.classes.join('\u0000') === classes.join('\u0000')
    const units = loaded.outputs[0].shape.at(-1)
    if (same && units === k) {
      model = loaded
    } else {
      model = replaceOutput(tf, loaded, k, opts.seed)
      extra.push(loaded)
      opts.emit({
        type: 'event',
        level: 'info',
        message: `the base model's output (${meta.classes?.length ?? units} classes) is replaced by a new ${k}-class layer`,
      })
    }
    origin = { base_model: opts.baseModelId ?? null }
  } else {
    throw new EngineError('invalid_request', 'give baseModelDir or architecture', true)
  }
  const dispose = () => disposeShared([model, ...extra])
  try {
    const backend = opts.backend ?? (tf.getBackend() as RunOptions['backend'])
    const reason = backend ? checkCapabilities(backend, model.toJSON(undefined, false), method) : null
    if (reason) throw new EngineError('backend_cannot_train', reason, true)
    // split first: standardization statistics come from the training split only
    const rowsOnly = { input: () => undefined as never }
    const split = splitParts(
      rowsOnly,
      train.y,
      train.rows,
      hp.validation_split,
      opts.seed,
      validationDs ? { source: rowsOnly, labels: validationDs.y, rows: validationDs.rows } : undefined,
    )
    if (train.kind === 'tabular' && !preprocessing.standardize) {
      preprocessing = { ...preprocessing, standardize: fitStandardization(train, split.train.rows) }
    }
    const trainSrc = rawSource(train, preprocessing, inputShape)
    const valSrc = validationDs ? rawSource(validationDs, preprocessing, inputShape) : trainSrc
    return {
      trainee: {
        model,
        inputShape,
        preprocessing,
        train: { ...split.train, source: trainSrc },
        val: split.val ? { ...split.val, source: valSrc } : null,
        classes,
        origin,
      },
      dispose,
    }
  } catch (err) {
    dispose()
    throw err
  }
}

/** Trains every layer of the model on the labels and saves it to `outputDir/model/`. */
export async function runSupervised(opts: SupervisedOptions): Promise<RunResult> {
  const { tf, emit } = opts
  const method: MethodSpec = { type: 'supervised' }
  const { trainee, dispose } = await prepareTrainee(opts, method)
  try {
    const { model, classes } = trainee
    await applyInitFrom(tf, model, opts.initFrom, emit)
    const resumed = opts.resumeFrom ? await resumeInto(tf, model, opts.resumeFrom.checkpointDir) : null
    const metadata = (): ModelMetadata => ({
      input_shape: trainee.inputShape,
      preprocessing: trainee.preprocessing,
      classes: [...classes],
      feature_layer: null,
      description: `supervised training of ${opts.architecture ?? opts.baseModelId ?? 'a model'} on ${classes.length} classes`,
      method: 'supervised',
      ...trainee.origin,
    })
    return await trainAllLayers(opts, trainee, { method: 'supervised', metadata, resumed })
  } finally {
    dispose()
  }
}

/**
 * One phase over every trainable layer of the trainee, then the final evaluation and save: supervised
 * training, and (with the teacher's cached soft targets) distillation.
 */
export async function trainAllLayers(
  opts: RunOptions,
  trainee: Trainee,
  run: {
    method: 'supervised' | 'distillation'
    metadata: () => ModelMetadata
    resumed: Awaited<ReturnType<typeof resumeInto>> | null
    soft?: PhasesOptions['soft']
  },
): Promise<RunResult> {
  const { tf, hyperparameters: hp } = opts
  const { model, classes } = trainee
  const result = await runPhases({
    ...runSettings(opts),
    model,
    phases: [
      () => ({
        forward: logitsFn(tf, model),
        variables: trainableVariables(model.layers),
        graphModel: model,
        train: trainee.train,
        val: trainee.val,
        epochs: hp.n_epochs,
        learningRate: hp.learning_rate,
      }),
    ],
    numClasses: classes.length,
    classes,
    method: run.method,
    metadata: run.metadata,
    resumed: run.resumed,
    soft: run.soft,
  })
  return finishRun(tf, opts, model, result, classes, run.metadata)
}
