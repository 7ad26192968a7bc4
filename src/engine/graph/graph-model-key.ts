// What identifies a TF.js graph model's conversion, without TensorFlow.js: the sha256 of the converter version,
// the node it is cut at, model.json and the weights names the compiled-graph cache entry; that entry's
// refit-graph.json then holds the compiled graph's own sha256 (what the feature cache keys a graph base by).
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { findGraph } from './saved-model-cache.js'

/** True when a model's metadata says its files are a TF.js graph model (uploaded, or fine-tuned on one). */
export function isGraphModelMeta(meta: object): boolean {
  return (meta as { graph_model?: { format?: string } }).graph_model?.format === 'tfjs-graph-model'
}

/** Bumped when the conversion of the same graph model changes: part of the graph cache key. */
export const GRAPH_MODEL_CONVERTER_VERSION = 1

/** The sha256 that names a graph model's conversion up to `node` in the compiled-graph cache. */
export function graphModelContentSha256(modelJson: Uint8Array, weights: Uint8Array, node: string | null): string {
  return createHash('sha256')
    .update(`refit-graph-model-v${GRAPH_MODEL_CONVERTER_VERSION}\n${node ?? ''}\n`)
    .update(modelJson)
    .update(weights)
    .digest('hex')
}

/**
 * sha256 of the compiled graph of the graph model in `dir` cut at `node`, as the compiled-graph cache in
 * `cacheDir` holds it; null when no process has compiled it there yet.
 */
export async function compiledGraphModelSha256(
  dir: string,
  node: string | null,
  cacheDir: string,
): Promise<string | null> {
  const [json, weights] = await Promise.all([
    readFile(path.join(dir, 'model.json')),
    readFile(path.join(dir, 'weights.bin')),
  ])
  return (await findGraph(cacheDir, graphModelContentSha256(json, weights, node)))?.meta.compiledSha256 ?? null
}
