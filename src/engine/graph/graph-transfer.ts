// Transfer learning on an uploaded TF.js graph model (metadata `graph_model`): the graph is converted up to its
// feature node into a frozen SavedModel (graph-model.ts), run through tfjs-node's session to compute features
// once, and a new head is trained on them. A graph model has no trainable layers here, so only the head
// trains (the API refuses unfreeze_top_blocks > 0). The fine-tuned model is stored as one TF.js graph model,
// the base up to its feature node followed by the head as graph nodes (graph-head.ts): stock
// `tf.loadGraphModel` runs the download, and the service runs it like any graph model. Its metadata's
// `graph_base` names the base and feature node, `graph_model` its output.
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
  let forward: FrozenForward | null = null
  const featureTensors: { dispose(): void }[] = []
  let headModel: LayersModel | null = null
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
    if (!gathered) return { modelDir: null, evaluation: null, trainedSamples: 0, cancelled: true, bestEpoch: null }
    const { train: trainFeatures, val: valFeatures } = gathered
    const featureDim = trainFeatures.dim
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
      graphModel: h.model,
      train: { ...rawParts.train, source: trainSrc },
      val: rawParts.val ? { ...rawParts.val, source: valSrc ?? trainSrc } : null,
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
    const run = await finishRun(tf, opts, h.model, result, classes, metadata)
    if (run.modelDir) await storeWithBase(opts.baseModelDir, graph, h.model, run.modelDir)
    return run
  } finally {
    ;(forward as FrozenForward | null)?.dispose()
    for (const f of featureTensors) f.dispose()
    if (headModel) disposeShared([headModel])
  }
}
