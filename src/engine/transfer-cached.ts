// A transfer job served from the feature cache: every dataset's backbone features were computed by an earlier
// job on the same file and backbone, so this run neither decodes images nor loads the backbone. It trains the
// head on the cached features exactly as runTransfer's head phase does (same split, same seeded generator,
// so the same metrics), and writes checkpoints and the saved model as whole models composed from files.
// Only for head-only jobs: a fine_tune phase trains through the backbone on raw images (runTransfer).
import { EngineError, incompatible } from './errors.js'
import type { CachedFeatures } from './feature-file.js'
import { graphModelOf, runGraphTransferOnCachedFeatures } from './graph/graph-transfer.js'
import { readMetadata } from './model-io.js'
import type { ChildMessage, MethodSpec, ModelMetadata } from './protocol.js'
import type { LayersModel } from './tf.js'
import {
  disposeShared,
  featureSource,
  finishRun,
  logitsFn,
  type RunOptions,
  type RunResult,
  resumeInto,
  runPhases,
  runSettings,
  splitParts,
  trainableVariables,
  validateHyperparameters,
} from './training.js'
import { DEFAULT_HEAD } from './transfer.js'
import { buildHead } from './transfer-model.js'
import { topologyLayerNames, wholeModelComposer } from './whole-model-files.js'

type TransferMethod = Extract<MethodSpec, { type: 'transfer' }>

/** What a cached run takes: RunOptions without loaded datasets, plus the cached features. */
export interface CachedTransferOptions extends Omit<RunOptions, 'train' | 'validation'> {
  baseModelDir: string
  baseModelId?: string | null
  method?: TransferMethod
  train: CachedFeatures
  validation?: CachedFeatures
}

/** True when a job can run on cached features alone: no phase trains through the backbone, no foreign weights. */
export function servableFromCache(method: TransferMethod, initFrom: unknown): boolean {
  return !initFrom && !(method.fine_tune && (method.unfreeze_top_blocks ?? 0) > 0)
}

/** The validation file's labels re-indexed into the training classes (alignClasses for cached features). */
export function alignCached(v: CachedFeatures, classes: string[]): CachedFeatures {
  const index = new Map(classes.map((c, i) => [c, i]))
  const map = v.classes.map((c) => {
    const i = index.get(c)
    if (i === undefined) throw incompatible(`validation class "${c}" does not occur in the training data`)
    return i
  })
  return { ...v, classes: [...classes], set: { ...v.set, labels: Int32Array.from(v.set.labels, (l) => map[l]) } }
}

/** The job's event for a run served wholly from the cache. */
export function announceCachedRun(
  opts: Pick<CachedTransferOptions, 'emit'>,
  train: CachedFeatures,
  validation: CachedFeatures | undefined,
  featureLayer: string,
): void {
  const samples = train.set.rows + (validation?.set.rows ?? 0)
  opts.emit({
    type: 'event',
    level: 'info',
    message: `features from cache for ${samples} samples: no image decoded, backbone not loaded`,
    data: { samples, from_cache: samples, computed: 0, feature_layer: featureLayer, feature_dim: train.set.dim },
  })
}

/** Trains a new head on cached features and saves the whole model to `outputDir/model/` (graph bases: graph-transfer.ts). */
export async function runTransferOnCachedFeatures(opts: CachedTransferOptions): Promise<RunResult> {
  const { tf, hyperparameters: hp, train } = opts
  const method: TransferMethod = opts.method ?? { type: 'transfer' }
  const head = method.head ?? DEFAULT_HEAD
  validateHyperparameters(hp)
  if (!(Number.isInteger(head.hidden_units) && head.hidden_units >= 0 && head.dropout >= 0 && head.dropout < 1))
    throw new EngineError('invalid_method', `invalid head ${JSON.stringify(head)}`, true)
  const meta = await readMetadata(opts.baseModelDir)
  const graph = graphModelOf(meta)
  if (graph) return runGraphTransferOnCachedFeatures(opts, meta, graph)
  if (!meta.feature_layer)
    throw new EngineError('base_model_not_transferable', 'base model metadata names no feature_layer', true)
  const classes = train.classes
  if (classes.length < 2)
    throw new EngineError('too_few_classes', `need at least 2 classes, got ${classes.length}`, true)
  if (train.set.rows < 2)
    throw new EngineError('too_few_samples', `need at least 2 training samples, got ${train.set.rows}`, true)
  const validation = opts.validation ? alignCached(opts.validation, classes) : undefined
  const composer = await wholeModelComposer(opts.baseModelDir, meta.feature_layer, train.shape)
  announceCachedRun(opts, train, validation, meta.feature_layer)

  // Checkpoints and the saved model become whole models before anyone hears of them: messages wait in order.
  let queue: Promise<void> = Promise.resolve()
  let failure: unknown = null
  const emit = (m: ChildMessage) => {
    queue = queue.then(async () => {
      if (failure) return
      try {
        if (m.type === 'checkpoint') await composer.writeInto(m.dir)
        opts.emit(m)
      } catch (err) {
        failure = err
      }
    })
  }

  // head layer names must not collide with the base's, as in runTransfer (read from model.json, not loaded)
  const names = await topologyLayerNames(opts.baseModelDir)
  const namesOnly = { layers: names.map((name) => ({ name })) } as unknown as LayersModel
  const h = buildHead(tf, namesOnly, train.set.dim, classes.length, opts.seed, head)
  const resumed = opts.resumeFrom ? await resumeInto(tf, h.model, opts.resumeFrom.checkpointDir) : null
  const trainSrc = featureSource(tf, train.set)
  const valSrc = validation ? featureSource(tf, validation.set) : null
  const parts = splitParts(
    trainSrc,
    train.set.labels,
    train.set.rows,
    hp.validation_split,
    opts.seed,
    validation && valSrc ? { source: valSrc, labels: validation.set.labels, rows: validation.set.rows } : undefined,
  )
  const metadata = (): ModelMetadata => ({
    input_shape: meta.input_shape,
    preprocessing: meta.preprocessing,
    classes: [...classes],
    feature_layer: meta.feature_layer,
    blocks: meta.blocks,
    description: `transfer learning on ${opts.baseModelId ?? 'a base model'}: new ${classes.length}-class head on ${meta.feature_layer}`,
    base_model: opts.baseModelId ?? null,
    method: 'transfer',
    transfer: { head, unfreeze_top_blocks: method.unfreeze_top_blocks ?? 0, fine_tune: method.fine_tune ?? null },
  })
  try {
    const result = await runPhases({
      ...runSettings(opts),
      emit,
      model: h.model,
      phases: [
        () => ({
          forward: logitsFn(tf, h.model),
          variables: trainableVariables(h.layers),
          graphModel: h.model,
          train: parts.train,
          val: parts.val,
          epochs: hp.n_epochs,
          learningRate: hp.learning_rate,
        }),
      ],
      numClasses: classes.length,
      classes,
      method: 'transfer',
      metadata,
      resumed,
    })
    // finishRun reads only the settings (hyperparameters, seed, backend, outputDir), never the datasets
    const run = await finishRun(tf, { ...opts, emit } as unknown as RunOptions, h.model, result, classes, metadata)
    if (run.modelDir) await composer.writeInto(run.modelDir)
    await queue
    if (failure) throw failure
    return run
  } finally {
    await queue
    trainSrc.dispose()
    valSrc?.dispose()
    disposeShared([h.model])
  }
}
