// Transfer learning: frozen backbone features computed once (cached "bottlenecks"), a new head trained on them,
// then optionally a fine_tune phase that trains the head with the backbone's top blocks through the whole
// model, BatchNorm in inference mode. The whole model (raw input -> classes) is what checkpoints and saves.

import { checkCapabilities } from './backend.js'
import { EngineError } from './errors.js'
import { gatherFeatures } from './feature-cache.js'
import type { CachedFeatures } from './feature-file.js'
import { type FrozenForward, frozenForward, frozenForwardEvent } from './graph/forward.js'
import { graphModelOf, runGraphTransfer } from './graph/graph-transfer.js'
import { loadModelForTraining, readMetadata } from './model-io.js'
import type { MethodSpec, ModelMetadata, TransferHead } from './protocol.js'
import {
  applyInitFrom,
  checkTrainable,
  disposeShared,
  featureSource,
  finishRun,
  forwardBatchSize,
  logitsFn,
  type Phase,
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
import { alignClasses, extractFeatures } from './transfer-data.js'
import { backboneBlocks, buildHead, composeWholeModel, cutBackbone } from './transfer-model.js'

type TransferMethod = Extract<MethodSpec, { type: 'transfer' }>

/** Everything a transfer run needs. */
export interface TransferOptions extends RunOptions {
  baseModelDir: string
  /** built-in id or model id of the base, recorded in the output metadata */
  baseModelId?: string | null
  /** head, unfrozen blocks, fine_tune phase; default: 128-unit head, dropout 0.5, frozen backbone */
  method?: TransferMethod
  /** samples per backbone forward pass while caching features; default by input size (forwardBatchSize) */
  featureBatchSize?: number
  /** the feature cache across jobs (training process): features already computed, and a sink for new ones */
  featureCache?: TransferFeatureCache
}

/** Features an earlier job computed for these datasets and this backbone, and where this job's go. */
export interface TransferFeatureCache {
  train: CachedFeatures | null
  validation: CachedFeatures | null
  /** receives features this job computed (with the file's own classes and labels) */
  computed(which: 'training' | 'validation', features: CachedFeatures): Promise<void>
}

export const DEFAULT_HEAD: TransferHead = { hidden_units: 128, dropout: 0.5 }

/**
 * Trains a new classification head on the base model's frozen features (then, with `fine_tune`, the head and
 * the top `unfreeze_top_blocks` blocks) and saves the whole model to `outputDir/model/`.
 */
export async function runTransfer(opts: TransferOptions): Promise<RunResult> {
  const { tf, train, hyperparameters: hp, emit } = opts
  const method: TransferMethod = opts.method ?? { type: 'transfer' }
  const head = method.head ?? DEFAULT_HEAD
  const unfreeze = method.unfreeze_top_blocks ?? 0
  const fineTune = method.fine_tune ?? null
  validateHyperparameters(hp)
  if (!(Number.isInteger(head.hidden_units) && head.hidden_units >= 0 && head.dropout >= 0 && head.dropout < 1))
    throw new EngineError('invalid_method', `invalid head ${JSON.stringify(head)}`, true)
  if (fineTune && !(Number.isInteger(fineTune.n_epochs) && fineTune.n_epochs >= 1 && fineTune.learning_rate > 0))
    throw new EngineError('invalid_method', `invalid fine_tune ${JSON.stringify(fineTune)}`, true)
  const meta = await readMetadata(opts.baseModelDir)
  if (!meta.feature_layer) {
    throw new EngineError('base_model_not_transferable', 'base model metadata names no feature_layer', true)
  }
  const graph = graphModelOf(meta)
  if (graph) return runGraphTransfer(opts, meta, graph)
  checkTrainable(train)
  const classes = train.classes
  const validationDs = opts.validation ? alignClasses(opts.validation, classes) : undefined

  const base = await loadModelForTraining(tf, opts.baseModelDir)
  const blocks = backboneBlocks(base, meta)
  if (!Number.isInteger(unfreeze) || unfreeze < 0 || unfreeze > blocks.length)
    throw new EngineError(
      'invalid_method',
      `unfreeze_top_blocks must be 0..${blocks.length} for this base model (blocks ${blocks.map((b) => b.name).join(', ')})`,
      true,
    )
  const unfrozenLayers = blocks.slice(blocks.length - unfreeze).flatMap((b) => b.layers)
  const backend = opts.backend ?? (tf.getBackend() as RunOptions['backend'])
  if (backend) {
    const reason = checkCapabilities(backend, base.toJSON(undefined, false), method, unfrozenLayers)
    if (reason) {
      disposeShared([base])
      throw new EngineError('backend_cannot_train', reason, true)
    }
  }
  if (unfreeze > 0 && !fineTune)
    emit({ type: 'event', level: 'warn', message: 'unfreeze_top_blocks has no effect without a fine_tune phase' })

  const { backbone, features } = cutBackbone(tf, base, meta.feature_layer)
  const featureDim = (backbone.outputs[0].shape.slice(1) as number[]).reduce((a, b) => a * b, 1)
  const h = buildHead(tf, base, featureDim, classes.length, opts.seed, head)
  const whole = composeWholeModel(tf, base, features, h)
  // before features are cached: initFrom and resume may change the backbone's weights
  await applyInitFrom(tf, whole, opts.initFrom, emit)
  const resumed = opts.resumeFrom ? await resumeInto(tf, whole, opts.resumeFrom.checkpointDir) : null

  const trainRaw = rawSource(train, meta.preprocessing, meta.input_shape)
  const valRaw = validationDs ? rawSource(validationDs, meta.preprocessing, meta.input_shape) : undefined
  const rawParts = splitParts(
    trainRaw,
    train.y,
    train.rows,
    hp.validation_split,
    opts.seed,
    validationDs && valRaw ? { source: valRaw, labels: validationDs.y, rows: validationDs.rows } : undefined,
  )

  const featureBatchSize = opts.featureBatchSize ?? forwardBatchSize(meta.input_shape)
  const featureTensors: { dispose(): void }[] = []
  const headPhase = async (): Promise<Phase> => {
    const t0 = performance.now()
    const shape = backbone.outputs[0].shape.slice(1) as number[]
    // the backbone is compiled (graph) or prepared (eager) only when some features must be computed
    let forward: FrozenForward | null = null
    let gathered: Awaited<ReturnType<typeof gatherFeatures>>
    try {
      gathered = await gatherFeatures({
        cache: opts.featureCache,
        train,
        validation: opts.validation && validationDs ? { file: opts.validation, aligned: validationDs } : null,
        shape,
        extract: async (ds) => {
          if (!forward) {
            forward = await frozenForward(tf, {
              model: base,
              cutLayer: meta.feature_layer,
              backend: backend ?? tf.getBackend(),
              settings: opts.graph,
            })
            emit(frozenForwardEvent('backbone', forward))
          }
          return extractFeatures(
            tf,
            forward,
            ds,
            meta.preprocessing,
            meta.input_shape,
            featureBatchSize,
            opts.isCancelled,
          )
        },
        computedBy: () => forward,
        featureLayer: meta.feature_layer,
        emit,
        t0,
      })
    } finally {
      ;(forward as FrozenForward | null)?.dispose()
    }
    if (!gathered) throw new Cancelled()
    const { train: trainFeatures, val: valFeatures } = gathered
    const trainSrc = featureSource(tf, trainFeatures)
    const valSrc = valFeatures ? featureSource(tf, valFeatures) : null
    featureTensors.push(trainSrc, ...(valSrc ? [valSrc] : []))
    return {
      forward: logitsFn(tf, h.model),
      variables: trainableVariables(h.layers),
      graphModel: h.model,
      train: { ...rawParts.train, source: trainSrc },
      val: rawParts.val ? { ...rawParts.val, source: valFeatures && valSrc ? valSrc : trainSrc } : null,
      epochs: hp.n_epochs,
      learningRate: hp.learning_rate,
    }
  }
  const phases: (() => Promise<Phase>)[] = [headPhase]
  if (fineTune && unfreeze > 0) {
    phases.push(async () => {
      emit({
        type: 'event',
        level: 'info',
        message: `fine-tuning the head with the top ${unfreeze} backbone blocks at learning rate ${fineTune.learning_rate}`,
        data: { blocks: blocks.slice(blocks.length - unfreeze).map((b) => b.name), layers: unfrozenLayers.length },
      })
      return {
        forward: logitsFn(tf, whole),
        variables: [
          ...trainableVariables(h.layers),
          ...trainableVariables(unfrozenLayers.map((n) => base.getLayer(n))),
        ],
        train: rawParts.train,
        val: rawParts.val,
        epochs: fineTune.n_epochs,
        learningRate: fineTune.learning_rate,
      }
    })
  }
  const metadata = (): ModelMetadata => ({
    input_shape: meta.input_shape,
    preprocessing: meta.preprocessing,
    classes: [...classes],
    feature_layer: meta.feature_layer,
    blocks,
    description: `transfer learning on ${opts.baseModelId ?? 'a base model'}: new ${classes.length}-class head on ${meta.feature_layer}${fineTune && unfreeze > 0 ? `, top ${unfreeze} blocks fine-tuned` : ''}`,
    base_model: opts.baseModelId ?? null,
    method: 'transfer',
    transfer: { head, unfreeze_top_blocks: unfreeze, fine_tune: fineTune },
  })
  try {
    const result = await runPhases({
      ...runSettings(opts),
      model: whole,
      phases,
      numClasses: classes.length,
      classes,
      method: 'transfer',
      metadata,
      resumed,
    })
    return await finishRun(tf, opts, whole, result, classes, metadata)
  } catch (err) {
    if (err instanceof Cancelled)
      return { modelDir: null, evaluation: null, trainedSamples: 0, cancelled: true, bestEpoch: null }
    throw err
  } finally {
    for (const f of featureTensors) f.dispose()
    disposeShared([whole, h.model, base])
  }
}

class Cancelled extends Error {}
