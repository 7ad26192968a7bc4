// The whole transfer model (raw input -> backbone up to the feature layer -> new head) written from files,
// without loading the backbone into TensorFlow.js: a job served from the feature cache trains only the head,
// and its checkpoints and saved model are the base model's topology and weight bytes up to the feature layer,
// followed by the head's. Weights keep their stored encoding (a uint8-quantized base stays quantized), so the
// result loads to exactly the values the base model loads to.
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { io } from '@tensorflow/tfjs'
import { MODEL_JSON, WEIGHTS_BIN } from './model-io.js'

/** The base model cannot be composed from its files (unknown layout); the caller takes the loading path. */
export class CannotComposeFiles extends Error {}

interface LayerJson {
  class_name: string
  name?: string
  config: { name: string; [k: string]: unknown }
  inbound_nodes?: unknown[][]
}

interface Topology {
  class_name: string
  config: { name?: string; layers: LayerJson[]; input_layers?: unknown; output_layers?: unknown[] } | LayerJson[]
  keras_version?: string
  backend?: string
}

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 }

function layersOf(t: Topology): LayerJson[] {
  return Array.isArray(t.config) ? t.config : t.config.layers
}

function topologyOf(json: io.ModelJSON): Topology {
  const t = json.modelTopology as { model_config?: Topology } & Topology
  return t.model_config ?? t
}

function layerName(l: LayerJson): string {
  return l.name ?? l.config.name
}

/** Layer names a model topology uses (for head names that do not collide), without loading it. */
export async function topologyLayerNames(dir: string): Promise<string[]> {
  const json = JSON.parse(await readFile(path.join(dir, MODEL_JSON), 'utf8')) as io.ModelJSON
  return layersOf(topologyOf(json)).map(layerName)
}

function freeName(taken: Set<string>, name: string): string {
  let candidate = name
  for (let i = 1; taken.has(candidate); i++) candidate = `${name}_${i}`
  return candidate
}

/** Names in inbound_nodes: `[[["layer", node, tensor, kwargs], ...], ...]` (the Keras 2 layout tfjs writes). */
function inboundNames(l: LayerJson): string[] {
  const out: string[] = []
  for (const node of l.inbound_nodes ?? []) {
    if (!Array.isArray(node)) throw new CannotComposeFiles(`layer ${layerName(l)}: unknown inbound_nodes layout`)
    for (const ref of node) {
      if (!Array.isArray(ref) || typeof ref[0] !== 'string')
        throw new CannotComposeFiles(`layer ${layerName(l)}: unknown inbound_nodes layout`)
      out.push(ref[0])
    }
  }
  return out
}

/** Base weights as stored: manifest entries with their encoded bytes. */
async function readStoredWeights(dir: string, json: io.ModelJSON) {
  const out: { spec: io.WeightsManifestEntry; bytes: Buffer }[] = []
  for (const group of json.weightsManifest) {
    const data = Buffer.concat(await Promise.all(group.paths.map((p) => readFile(path.join(dir, p)))))
    let at = 0
    for (const spec of group.weights) {
      const per = BYTES[spec.quantization?.dtype ?? spec.dtype]
      if (!per) throw new CannotComposeFiles(`weight ${spec.name}: dtype ${spec.dtype} is not supported`)
      const n = spec.shape.reduce((a, b) => a * b, 1) * per
      if (at + n > data.length) throw new CannotComposeFiles(`weights of ${spec.name} run past the weight files`)
      out.push({ spec, bytes: data.subarray(at, at + n) })
      at += n
    }
  }
  return out
}

/** Writes whole models from a base model directory and head model directories. */
export interface WholeModelComposer {
  /** replaces the head model in `dir` (model.json + weights.bin, as saveModel wrote them) by the whole model */
  writeInto(dir: string): Promise<void>
}

/**
 * Prepares the base side once: the layers the feature layer depends on and their stored weights. `featureShape`
 * is the feature layer's output shape without the batch dimension (a Flatten goes in front of the head when it
 * is not a vector, as composeWholeModel does).
 */
export async function wholeModelComposer(
  baseDir: string,
  featureLayer: string,
  featureShape: number[],
): Promise<WholeModelComposer> {
  const baseJson = JSON.parse(await readFile(path.join(baseDir, MODEL_JSON), 'utf8')) as io.ModelJSON
  const base = topologyOf(baseJson)
  const layers = layersOf(base)
  const sequential = base.class_name === 'Sequential'
  const index = layers.findIndex((l) => layerName(l) === featureLayer)
  if (index < 0) throw new CannotComposeFiles(`base model has no layer named "${featureLayer}"`)
  let kept: LayerJson[]
  if (sequential) kept = layers.slice(0, index + 1)
  else {
    const byName = new Map(layers.map((l) => [layerName(l), l]))
    const needed = new Set<string>()
    const stack = [featureLayer]
    while (stack.length) {
      const name = stack.pop()!
      if (needed.has(name)) continue
      const l = byName.get(name)
      if (!l) throw new CannotComposeFiles(`layer ${name} is referenced but not defined`)
      needed.add(name)
      stack.push(...inboundNames(l))
    }
    kept = layers.filter((l) => needed.has(layerName(l)))
  }
  const keptNames = new Set(kept.map(layerName))
  const allNames = new Set(layers.map(layerName))
  const weights = (await readStoredWeights(baseDir, baseJson)).filter(({ spec }) => {
    const owner = spec.name.split('/')[0]
    if (!allNames.has(owner)) throw new CannotComposeFiles(`weight ${spec.name} names no layer of the base model`)
    return keptNames.has(owner)
  })
  const flatten = featureShape.length > 1 ? freeName(allNames, 'head_flatten') : null

  return {
    async writeInto(dir: string) {
      const headJson = JSON.parse(await readFile(path.join(dir, MODEL_JSON), 'utf8')) as io.ModelJSON
      const head = topologyOf(headJson)
      const headLayers = layersOf(head)
      const input = headLayers.find((l) => l.class_name === 'InputLayer')
      if (!input) throw new CannotComposeFiles('head model has no input layer')
      const inputName = layerName(input)
      const headBytes = await readFile(path.join(dir, WEIGHTS_BIN))
      const attach = flatten ?? featureLayer
      const flattenLayer: LayerJson[] = flatten
        ? [
            {
              class_name: 'Flatten',
              name: flatten,
              config: { name: flatten, trainable: true, dtype: 'float32', data_format: 'channels_last' },
              ...(sequential ? {} : { inbound_nodes: [[[featureLayer, 0, 0, {}]]] }),
            },
          ]
        : []
      const rest = headLayers
        .filter((l) => l !== input)
        .map((l) => {
          if (sequential) return { class_name: l.class_name, config: l.config }
          const nodes = (l.inbound_nodes ?? []).map((node) =>
            (node as unknown[][]).map((ref) => (ref[0] === inputName ? [attach, ...ref.slice(1)] : ref)),
          )
          return { ...l, inbound_nodes: nodes }
        })
      const wholeLayers = [...kept, ...flattenLayer, ...rest]
      const config = sequential
        ? { name: 'refit_transfer', layers: wholeLayers }
        : {
            name: 'refit_transfer',
            layers: wholeLayers,
            input_layers: (base.config as { input_layers: unknown }).input_layers,
            output_layers: (head.config as { output_layers: unknown }).output_layers,
          }
      const headSpecs = headJson.weightsManifest.flatMap((g) => g.weights)
      const json: io.ModelJSON = {
        ...headJson,
        modelTopology: {
          class_name: sequential ? 'Sequential' : head.class_name,
          config,
          keras_version: head.keras_version,
          backend: head.backend,
        },
        weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: [...weights.map((w) => w.spec), ...headSpecs] }],
      }
      await writeFile(path.join(dir, WEIGHTS_BIN), Buffer.concat([...weights.map((w) => w.bytes), headBytes]))
      await writeFile(path.join(dir, MODEL_JSON), JSON.stringify(json))
    },
  }
}
