// Transfer learning on an uploaded TF.js graph model (metadata `graph_model`): the graph is converted up to its
// feature node into a frozen SavedModel (graph-model.ts), run through tfjs-node's session to compute features
// once, and a new head is trained on them. A graph model has no trainable layers here, so only the head
// trains (the API refuses unfreeze_top_blocks > 0). The fine-tuned model is stored as one TF.js graph model,
// the base up to its feature node followed by the head as graph nodes (graph-head.ts): stock
// `tf.loadGraphModel` runs the download, and the service runs it like any graph model. Its metadata's
// `graph_base` names the base and feature node, `graph_model` its output. A job whose features are all in the
// cache across jobs trains its head on them alone (runGraphTransferOnCachedFeatures): no image decoded.
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { EngineError } from '../errors.js'
import { gatherFeatures } from '../feature-cache.js'
import { MODEL_JSON, WEIGHTS_BIN } from '../model-io.js'
import type { ModelMetadata } from '../protocol.js'
import type { LayersModel } from '../tf.js'
import {
  checkTrainable,
  disposeShared,
  featureSource,
  finishRun,
  forwardBatchSize,
  logitsFn,
  type Phase,
  type RunOptions,
  type RunResult,
  resumeInto,
  runPhases,
  runSettings,
  splitParts,
  trainableVariables,
} from '../training.js'
import { DEFAULT_HEAD, type TransferOptions } from '../transfer.js'
import { alignCached, announceCachedRun, type CachedTransferOptions } from '../transfer-cached.js'
import { alignClasses, extractFeatures, type FeatureSet } from '../transfer-data.js'
import { buildHead } from '../transfer-model.js'
import { type FrozenForward, frozenForwardEvent } from './forward.js'
import { graphModelWithHead, HEAD_OUTPUT } from './graph-head.js'
import type { GraphModelJson } from './graph-model.js'
import { graphModelForward } from './graph-model-forward.js'

/** What an uploaded graph model's metadata records (model-upload.ts writes it). */
export interface GraphModelMeta {
  format: 'tfjs-graph-model'
  input: string
  output: string
  feature_node: string
  /** the op computing the output (through Identity nodes); `Softmax`: class probabilities, so it can teach */
  output_op?: string | null
}

/** The graph-model record of a model's metadata, or null for a layers model. */
export function graphModelOf(meta: ModelMetadata): GraphModelMeta | null {
  const g = meta.graph_model as GraphModelMeta | undefined
  return g && g.format === 'tfjs-graph-model' ? g : null
}

/**
 * Replaces the head saved in `modelDir` (a layers model taking feature vectors) with the whole network as one
 * TF.js graph model (graph-head.ts); checkpoints keep the head alone (resuming trains it).
 */
async function storeWithBase(baseDir: string, graph: GraphModelMeta, head: LayersModel, modelDir: string) {
  const json = JSON.parse(await readFile(path.join(baseDir, MODEL_JSON), 'utf8')) as GraphModelJson
  const weights = await readFile(path.join(baseDir, WEIGHTS_BIN))
  const out = graphModelWithHead(json, weights, graph.feature_node, head)
  await writeFile(path.join(modelDir, WEIGHTS_BIN), out.weights)
  await writeFile(path.join(modelDir, MODEL_JSON), JSON.stringify(out.modelJson))
}

/** Refuses what a graph-model base cannot train: only a new head on its frozen graph. */
function checkGraphMethod(method: TransferOptions['method'], initFrom: unknown): void {
  if ((method?.unfreeze_top_blocks ?? 0) > 0 || method?.fine_tune)
    throw new EngineError(
      'invalid_method',
      'a TF.js graph-model base is frozen: only a new head trains (unfreeze_top_blocks must be 0, no fine_tune)',
      true,
    )
  if (initFrom) throw new EngineError('invalid_method', 'a graph-model base cannot start from a checkpoint', true)
}

/** A head-only transfer run on a graph-model base; see the file comment. */
export async function runGraphTransfer(
  opts: TransferOptions,
  meta: ModelMetadata,
  graph: GraphModelMeta,
): Promise<RunResult> {
  const { tf, train, emit } = opts
  checkGraphMethod(opts.method, opts.initFrom)
  checkTrainable(train)
  const classes = train.classes
  const validationDs = opts.validation ? alignClasses(opts.validation, classes) : undefined
  let forward: FrozenForward | null = null
  try {
    const batch = opts.featureBatchSize ?? forwardBatchSize(meta.input_shape)
    // features an earlier job computed for these files through the same compiled graph (the cache key holds
    // the compiled graph's sha256): the base graph is then not even opened
    const gathered = await gatherFeatures({
      cache: opts.featureCache,
      train,
      validation: opts.validation && validationDs ? { file: opts.validation, aligned: validationDs } : null,
      extract: async (ds) => {
        if (!forward) {
          forward = await graphModelForward(tf, {
            dir: opts.baseModelDir,
            node: graph.feature_node,
            inputShape: meta.input_shape,
            backend: opts.backend ?? tf.getBackend(),
            settings: opts.graph,
          })
          emit(frozenForwardEvent('backbone', forward))
        }
        return extractFeatures(tf, forward, ds, meta.preprocessing, meta.input_shape, batch, opts.isCancelled)
      },
      computedBy: () => forward,
      backboneLabel: 'graph model',
      featureLayer: graph.feature_node,
      emit,
      t0: performance.now(),
    })
    ;(forward as FrozenForward | null)?.dispose()
    forward = null
    if (!gathered) return { modelDir: null, evaluation: null, trainedSamples: 0, cancelled: true, bestEpoch: null }
    // features carry their dataset's labels (the validation ones aligned to the training classes)
    return await trainGraphHead(opts, meta, graph, classes, gathered.train, gathered.val)
  } finally {
    ;(forward as FrozenForward | null)?.dispose()
  }
}

/**
 * A head-only transfer run on a graph-model base whose every dataset has verified cached features
 * (transfer-cached.ts sends it here): no image decoded, the base graph not opened.
 */
export async function runGraphTransferOnCachedFeatures(
  opts: CachedTransferOptions,
  meta: ModelMetadata,
  graph: GraphModelMeta,
): Promise<RunResult> {
  checkGraphMethod(opts.method, null)
  const { train } = opts
  const validation = opts.validation ? alignCached(opts.validation, train.classes) : undefined
  announceCachedRun(opts, train, validation, graph.feature_node)
  return trainGraphHead(opts, meta, graph, train.classes, train.set, validation?.set)
}

/** Trains the head on features (labels in the sets), then stores it with the base as one graph model. */
async function trainGraphHead(
  opts: Omit<TransferOptions, 'train' | 'validation'>,
  meta: ModelMetadata,
  graph: GraphModelMeta,
  classes: string[],
  trainFeatures: FeatureSet,
  valFeatures: FeatureSet | undefined,
): Promise<RunResult> {
  const { tf, hyperparameters: hp } = opts
  const head = opts.method?.head ?? DEFAULT_HEAD
  const featureDim = trainFeatures.dim
  // the head's layer names only need to be unique within the head: no base layers to avoid
  const h = buildHead(tf, { layers: [] } as unknown as LayersModel, featureDim, classes.length, opts.seed, head)
  const trainSrc = featureSource(tf, trainFeatures)
  const valSrc = valFeatures ? featureSource(tf, valFeatures) : null
  try {
    const resumed = opts.resumeFrom ? await resumeInto(tf, h.model, opts.resumeFrom.checkpointDir) : null
    const parts = splitParts(
      trainSrc,
      trainFeatures.labels,
      trainFeatures.rows,
      hp.validation_split,
      opts.seed,
      valFeatures && valSrc ? { source: valSrc, labels: valFeatures.labels, rows: valFeatures.rows } : undefined,
    )
    const phase = async (): Promise<Phase> => ({
      forward: logitsFn(tf, h.model),
      variables: trainableVariables(h.layers),
      graphModel: h.model,
      train: parts.train,
      val: parts.val,
      epochs: hp.n_epochs,
      learningRate: hp.learning_rate,
    })
    const metadata = (): ModelMetadata => ({
      input_shape: meta.input_shape,
      preprocessing: meta.preprocessing,
      classes: [...classes],
      feature_layer: graph.feature_node,
      description: `transfer learning on ${opts.baseModelId ?? 'a TF.js graph model'}: new ${classes.length}-class head on graph node ${graph.feature_node}`,
      base_model: opts.baseModelId ?? null,
      method: 'transfer',
      transfer: { head, unfreeze_top_blocks: 0, fine_tune: null },
      graph_base: { model: opts.baseModelId ?? null, feature_node: graph.feature_node, feature_shape: [featureDim] },
      // stored as one graph model (storeWithBase): the base up to the feature node, then the head's nodes
      graph_model: {
        format: 'tfjs-graph-model',
        input: graph.input,
        output: HEAD_OUTPUT,
        feature_node: graph.feature_node,
        output_op: 'Softmax',
      } satisfies GraphModelMeta,
    })
    const result = await runPhases({
      ...runSettings(opts),
      model: h.model,
      phases: [phase],
      numClasses: classes.length,
      classes,
      method: 'transfer',
      metadata,
      resumed,
    })
    // finishRun reads only the settings (hyperparameters, seed, backend, outputDir), never the datasets
    const run = await finishRun(tf, opts as unknown as RunOptions, h.model, result, classes, metadata)
    if (run.modelDir) await storeWithBase(opts.baseModelDir, graph, h.model, run.modelDir)
    return run
  } finally {
    trainSrc.dispose()
    valSrc?.dispose()
    disposeShared([h.model])
  }
}
