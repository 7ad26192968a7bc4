// Transfer learning on an uploaded TF.js graph model (metadata `graph_model`): the graph is converted up to its
// feature node into a frozen SavedModel (graph-model.ts), run through tfjs-node's session to compute features
// once, and a new head is trained on them. A graph model has no trainable layers here, so only the head
// trains (the API refuses unfreeze_top_blocks > 0) and the saved model is the head alone (input: the feature
// vector); its metadata's `graph_base` names the base and feature node it needs in front of it.
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { EngineError } from '../errors.js'
import { MODEL_JSON, WEIGHTS_BIN } from '../model-io.js'
import type { ModelMetadata } from '../protocol.js'
import type { LayersModel, Tensor } from '../tf.js'
import {
  checkTrainable,
  disposeShared,
  featureSource,
  finishRun,
  forwardBatchSize,
  logitsFn,
  type Phase,
  type RunResult,
  rawSource,
  resumeInto,
  runPhases,
  runSettings,
  splitParts,
  trainableVariables,
} from '../training.js'
import type { TransferOptions } from '../transfer.js'
import { alignClasses, extractFeatures } from '../transfer-data.js'
import { buildHead } from '../transfer-model.js'
import { DEFAULT_GRAPH_SETTINGS, type FrozenForward, forwardEventData, frozenForwardEvent } from './forward.js'
import { type GraphModelJson, graphModelSavedModel } from './graph-model.js'
import { removePrivateGraph, writeGraph } from './saved-model-cache.js'

/** What an uploaded graph model's metadata records (model-upload.ts writes it). */
export interface GraphModelMeta {
  format: 'tfjs-graph-model'
  input: string
  output: string
  feature_node: string
}

/** The graph-model record of a model's metadata, or null for a layers model. */
export function graphModelOf(meta: ModelMetadata): GraphModelMeta | null {
  const g = meta.graph_model as GraphModelMeta | undefined
  return g && g.format === 'tfjs-graph-model' ? g : null
}

/** Bumped when the conversion of the same graph model changes: part of the graph cache key. */
const GRAPH_MODEL_CONVERTER_VERSION = 1

/** Compiles (or finds) the graph model in `dir` up to `node` and opens it as a frozen forward pass. */
async function graphModelForward(
  opts: TransferOptions,
  dir: string,
  node: string,
  inputShape: number[],
): Promise<FrozenForward> {
  const { tf } = opts
  const settings = opts.graph ?? DEFAULT_GRAPH_SETTINGS
  const node_ = (tf as any).node
  if (typeof node_?.loadSavedModel !== 'function')
    throw new EngineError(
      'backend_cannot_train',
      `a TF.js graph-model base runs only as a TensorFlow graph: backend ${opts.backend ?? tf.getBackend()} has no SavedModel sessions`,
      true,
    )
  const t0 = performance.now()
  const jsonText = await readFile(path.join(dir, MODEL_JSON))
  const weightsBuf = await readFile(path.join(dir, WEIGHTS_BIN))
  const contentSha256 = createHash('sha256')
    .update(`refit-graph-model-v${GRAPH_MODEL_CONVERTER_VERSION}\n${node}\n`)
    .update(jsonText)
    .update(weightsBuf)
    .digest('hex')
  const json = JSON.parse(jsonText.toString('utf8')) as GraphModelJson
  const weights = weightsBuf.buffer.slice(weightsBuf.byteOffset, weightsBuf.byteOffset + weightsBuf.byteLength)
  let bytes: Uint8Array
  try {
    // the feature width is unknown until the graph runs: the signature leaves it open
    bytes = graphModelSavedModel(tf, json, weights as ArrayBuffer, { output: node, outputShape: [-1] })
  } catch (err) {
    throw new EngineError('base_model_not_transferable', `graph model: ${(err as Error).message}`, true)
  }
  const compiledSha256 = createHash('sha256').update(bytes).digest('hex')
  const graphDir = await writeGraph(settings.cacheDir, contentSha256, bytes, {
    contentSha256,
    compiledSha256,
    bytes: bytes.byteLength,
    inputShape,
    outputShape: [-1],
    compilerVersion: GRAPH_MODEL_CONVERTER_VERSION,
  })
  const session = await node_.loadSavedModel(graphDir, ['serve'], 'serving_default')
  await removePrivateGraph(settings.cacheDir, graphDir)
  const probe = tf.zeros([1, ...inputShape]) as Tensor
  const y = session.predict(probe) as Tensor
  const outputShape = y.shape.slice(1) as number[]
  tf.dispose([probe, y])
  let open = true
  return {
    path: 'graph',
    reason: `TF.js graph model converted up to ${node}`,
    layer: null,
    contentSha256,
    compiledSha256,
    outputShape,
    bytes: bytes.byteLength,
    compileMs: Math.round(performance.now() - t0),
    checkedMaxDiff: null,
    apply: (x) => tf.tidy(() => session.predict(x) as Tensor),
    dispose: () => {
      if (open) session.dispose()
      open = false
    },
  }
}

/** A head-only transfer run on a graph-model base; see the file comment. */
export async function runGraphTransfer(
  opts: TransferOptions,
  meta: ModelMetadata,
  graph: GraphModelMeta,
): Promise<RunResult> {
  const { tf, train, hyperparameters: hp, emit } = opts
  const method = opts.method ?? { type: 'transfer' as const }
  const head = method.head ?? { hidden_units: 128, dropout: 0.5 }
  if ((method.unfreeze_top_blocks ?? 0) > 0 || method.fine_tune)
    throw new EngineError(
      'invalid_method',
      'a TF.js graph-model base is frozen: only a new head trains (unfreeze_top_blocks must be 0, no fine_tune)',
      true,
    )
  if (opts.initFrom) throw new EngineError('invalid_method', 'a graph-model base cannot start from a checkpoint', true)
  checkTrainable(train)
  const classes = train.classes
  const validationDs = opts.validation ? alignClasses(opts.validation, classes) : undefined
  const forward = await graphModelForward(opts, opts.baseModelDir, graph.feature_node, meta.input_shape)
  emit(frozenForwardEvent('backbone', forward))
  const featureTensors: { dispose(): void }[] = []
  let headModel: LayersModel | null = null
  try {
    const t0 = performance.now()
    const batch = opts.featureBatchSize ?? forwardBatchSize(meta.input_shape)
    const extract = (ds: typeof train) =>
      extractFeatures(tf, forward, ds, meta.preprocessing, meta.input_shape, batch, opts.isCancelled)
    const trainFeatures = await extract(train)
    const valFeatures = validationDs && trainFeatures ? await extract(validationDs) : undefined
    if (!trainFeatures || valFeatures === null)
      return { modelDir: null, evaluation: null, trainedSamples: 0, cancelled: true, bestEpoch: null }
    const featureDim = trainFeatures.dim
    const samples = trainFeatures.rows + (valFeatures?.rows ?? 0)
    emit({
      type: 'event',
      level: 'info',
      message: `computed backbone features for ${samples} samples (graph model)`,
      data: {
        samples,
        from_cache: 0,
        computed: samples,
        ms: Math.round(performance.now() - t0),
        feature_layer: graph.feature_node,
        feature_dim: featureDim,
        ...forwardEventData(forward),
      },
    })
    // the head's layer names only need to be unique within the head: no base layers to avoid
    const h = buildHead(tf, { layers: [] } as unknown as LayersModel, featureDim, classes.length, opts.seed, head)
    headModel = h.model
    const resumed = opts.resumeFrom ? await resumeInto(tf, h.model, opts.resumeFrom.checkpointDir) : null
    const rawParts = splitParts(
      rawSource(train, meta.preprocessing, meta.input_shape),
      train.y,
      train.rows,
      hp.validation_split,
      opts.seed,
      validationDs
        ? {
            source: rawSource(validationDs, meta.preprocessing, meta.input_shape),
            labels: validationDs.y,
            rows: validationDs.rows,
          }
        : undefined,
    )
    const trainSrc = featureSource(tf, trainFeatures)
    const valSrc = valFeatures ? featureSource(tf, valFeatures) : null
    featureTensors.push(trainSrc, ...(valSrc ? [valSrc] : []))
    const phase = async (): Promise<Phase> => ({
      forward: logitsFn(tf, h.model),
      variables: trainableVariables(h.layers),
      train: { ...rawParts.train, source: trainSrc },
      val: rawParts.val ? { ...rawParts.val, source: valSrc ?? trainSrc } : null,
      epochs: hp.n_epochs,
      learningRate: hp.learning_rate,
    })
    const metadata = (): ModelMetadata => ({
      input_shape: meta.input_shape,
      preprocessing: meta.preprocessing,
      classes: [...classes],
      feature_layer: null,
      description: `transfer learning on ${opts.baseModelId ?? 'a TF.js graph model'}: new ${classes.length}-class head on graph node ${graph.feature_node}`,
      base_model: opts.baseModelId ?? null,
      method: 'transfer',
      transfer: { head, unfreeze_top_blocks: 0, fine_tune: null },
      // the stored network is the head alone: it takes the graph model's features at this node
      graph_base: { model: opts.baseModelId ?? null, feature_node: graph.feature_node, feature_shape: [featureDim] },
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
    return await finishRun(tf, opts, h.model, result, classes, metadata)
  } finally {
    forward.dispose()
    for (const f of featureTensors) f.dispose()
    if (headModel) disposeShared([headModel])
  }
}
