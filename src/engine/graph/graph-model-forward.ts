// A stored TF.js graph model (model.json with a GraphDef + weights.bin) opened as a frozen forward pass: its
// conversion (graph-model.ts) up to a node (a transfer base's feature node) or to its output (a fine-tuned
// graph model's probabilities) is kept in the compiled-graph cache by the sha256 of what was converted, and run
// through tfjs-node's SavedModel session. Transfer features, predictions, evaluations and teacher outputs on
// graph models all come through here.
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { EngineError } from '../errors.js'
import { MODEL_JSON, WEIGHTS_BIN } from '../model-io.js'
import type { BackendName, GraphSettings } from '../protocol.js'
import type { Tensor, Tf } from '../tf.js'
import { DEFAULT_GRAPH_SETTINGS, type FrozenForward } from './forward.js'
import { type GraphModelJson, graphModelSavedModel } from './graph-model.js'
import { GRAPH_MODEL_CONVERTER_VERSION, graphModelContentSha256 } from './graph-model-key.js'
import { findGraph, pruneGraphs, removePrivateGraph, writeGraph } from './saved-model-cache.js'

export { graphModelContentSha256, isGraphModelMeta } from './graph-model-key.js'

/** What to open: the graph model in `dir`, up to `node` (default: its output). */
export interface GraphModelForwardOptions {
  dir: string
  node?: string | null
  /** per-sample input shape (metadata.json's input_shape) */
  inputShape: number[]
  backend: BackendName | string
  settings?: GraphSettings
}

/** Compiles (or finds in the cache) the graph model and opens it as a frozen forward pass (graph path only). */
export async function graphModelForward(tf: Tf, opts: GraphModelForwardOptions): Promise<FrozenForward> {
  const settings = opts.settings ?? DEFAULT_GRAPH_SETTINGS
  const node_ = (tf as any).node
  if (typeof node_?.loadSavedModel !== 'function')
    throw new EngineError(
      'backend_cannot_train',
      `a TF.js graph model runs only as a TensorFlow graph: backend ${opts.backend} has no SavedModel sessions`,
      true,
    )
  const t0 = performance.now()
  const node = opts.node ?? null
  const jsonText = await readFile(path.join(opts.dir, MODEL_JSON))
  const weightsBuf = await readFile(path.join(opts.dir, WEIGHTS_BIN))
  const contentSha256 = graphModelContentSha256(jsonText, weightsBuf, node)
  let graphDir: string
  let compiledSha256: string
  let bytes: number
  let reason: string
  const cached = settings.cacheDir ? await findGraph(settings.cacheDir, contentSha256) : null
  if (cached) {
    graphDir = cached.dir
    compiledSha256 = cached.meta.compiledSha256
    bytes = cached.meta.bytes
    reason = `TF.js graph model${node ? ` up to ${node}` : ''}: compiled graph from the cache`
  } else {
    const json = JSON.parse(jsonText.toString('utf8')) as GraphModelJson
    const weights = weightsBuf.buffer.slice(weightsBuf.byteOffset, weightsBuf.byteOffset + weightsBuf.byteLength)
    let pb: Uint8Array
    try {
      // the output width is unknown until the graph runs: the signature leaves it open
      pb = graphModelSavedModel(tf, json, weights as ArrayBuffer, { output: node ?? undefined, outputShape: [-1] })
    } catch (err) {
      throw new EngineError('base_model_not_transferable', `graph model: ${(err as Error).message}`, true)
    }
    compiledSha256 = createHash('sha256').update(pb).digest('hex')
    bytes = pb.byteLength
    graphDir = await writeGraph(settings.cacheDir, contentSha256, pb, {
      contentSha256,
      compiledSha256,
      bytes,
      inputShape: opts.inputShape,
      outputShape: [-1],
      compilerVersion: GRAPH_MODEL_CONVERTER_VERSION,
    })
    if (settings.cacheDir) await pruneGraphs(settings.cacheDir, settings.cacheBytes, graphDir)
    reason = `TF.js graph model converted${node ? ` up to ${node}` : ''}`
  }
  const session = await node_.loadSavedModel(graphDir, ['serve'], 'serving_default')
  await removePrivateGraph(settings.cacheDir, graphDir)
  const probe = tf.zeros([1, ...opts.inputShape]) as Tensor
  const y = session.predict(probe) as Tensor
  const outputShape = y.shape.slice(1) as number[]
  tf.dispose([probe, y])
  let open = true
  return {
    path: 'graph',
    reason,
    layer: null,
    contentSha256,
    compiledSha256,
    outputShape,
    bytes,
    compileMs: Math.round(performance.now() - t0),
    checkedMaxDiff: null,
    apply: (x) => tf.tidy(() => session.predict(x) as Tensor),
    dispose: () => {
      if (open) session.dispose()
      open = false
    },
  }
}
