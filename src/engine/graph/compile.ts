// Compiles the frozen part of a LayersModel (from its input up to one output tensor: the cut layer's output,
// or the model's own output) into a frozen TensorFlow graph. Planning walks the layer graph backwards from
// that tensor and checks every layer against the coverage table (layers.ts) without reading a weight; only a
// fully covered plan reads weights, fingerprints them and emits the GraphDef.
import { createHash } from 'node:crypto'
import type { LayersModel, SymbolicTensor } from '../tf.js'
import { attr, GraphBuilder } from './graph-def.js'
import { GRAPH_LAYERS, type LayerCall, type Weight } from './layers.js'

/** Bump when the emitted graph for the same model changes: it is part of every cache key. */
export const GRAPH_COMPILER_VERSION = 1

type Layer = LayersModel['layers'][number]

interface Step {
  layer: Layer
  call: LayerCall
  /** keys of the steps whose outputs feed this one (an InputLayer's key for the model input) */
  inputs: string[]
  key: string
}

/** A model (or its part below a cut) that can run as a frozen graph, not compiled yet. */
export interface GraphPlan {
  steps: Step[]
  inputKey: string
  outputKey: string
  /** per-sample input and output shapes */
  inputShape: number[]
  outputShape: number[]
}

/** Why a model stays eager: the first layer (bottom up) the compiler does not translate. */
export interface Uncovered {
  layer: string | null
  className: string | null
  reason: string
}

type Internal = any

function shapesOf(s: Internal): (number | null)[][] {
  if (!Array.isArray(s)) return []
  return s.length > 0 && Array.isArray(s[0]) ? s : [s]
}

/**
 * Plans the graph computing `output` (default: the model's only output). Returns an `Uncovered` when a layer
 * class or configuration has no translation, or the model has several inputs or outputs.
 */
export function planGraph(model: LayersModel, output?: SymbolicTensor): GraphPlan | Uncovered {
  if (model.inputs.length !== 1)
    return { layer: null, className: null, reason: `the model has ${model.inputs.length} inputs` }
  if (!output && model.outputs.length !== 1)
    return { layer: null, className: null, reason: `the model has ${model.outputs.length} outputs` }
  const target = (output ?? model.outputs[0]) as Internal
  const steps: Step[] = []
  const done = new Set<string>()
  let inputKey: string | null = null
  let problem: Uncovered | null = null
  const visit = (t: Internal): string | null => {
    const layer = t.sourceLayer as Layer
    const key = `${layer.name}#${t.nodeIndex}`
    if (t.tensorIndex !== 0) {
      problem ??= { layer: layer.name, className: layer.getClassName(), reason: 'a layer with several outputs' }
      return null
    }
    if (done.has(key)) return key
    done.add(key)
    const className = layer.getClassName()
    if (className === 'InputLayer') {
      if (inputKey && inputKey !== key) problem ??= { layer: layer.name, className, reason: 'a second model input' }
      inputKey = key
      return key
    }
    const node = (layer as Internal).inboundNodes[t.nodeIndex]
    const inputs: string[] = []
    for (const x of node.inputTensors as Internal[]) {
      const k = visit(x)
      if (k === null) return null
      inputs.push(k)
    }
    const rule = GRAPH_LAYERS[className]
    const call: LayerCall = {
      name: layer.name,
      className,
      config: layer.getConfig() as LayerCall['config'],
      inputShapes: shapesOf(node.inputShapes),
      outputShape: shapesOf(node.outputShapes)[0] ?? [],
    }
    if (!rule) {
      problem ??= { layer: layer.name, className, reason: `layer class ${className} has no graph translation` }
      return null
    }
    const refused = rule.check?.(call)
    if (refused) {
      problem ??= { layer: layer.name, className, reason: refused }
      return null
    }
    steps.push({ layer, call, inputs, key })
    return key
  }
  const outputKey = visit(target)
  if (problem) return problem
  if (outputKey === null || inputKey === null)
    return { layer: null, className: null, reason: 'the output does not depend on the model input' }
  const inShape = (model.inputs[0].shape as (number | null)[]).slice(1)
  const outShape = (target.shape as (number | null)[]).slice(1)
  if (!inShape.every((d) => typeof d === 'number') || !outShape.every((d) => typeof d === 'number'))
    return { layer: null, className: null, reason: 'input or output shape is not fully known' }
  return { steps, inputKey, outputKey, inputShape: inShape as number[], outputShape: outShape as number[] }
}

export function isUncovered(p: GraphPlan | Uncovered): p is Uncovered {
  return (p as Uncovered).reason !== undefined
}

/** A layer's weights by short name (`Conv1/kernel` -> `kernel`), as float32 copies. */
function readWeights(layer: Layer): Map<string, Weight> {
  const out = new Map<string, Weight>()
  for (const w of layer.weights as Internal[]) {
    const full = String(w.originalName ?? w.name)
    const short = full.slice(full.lastIndexOf('/') + 1)
    out.set(short, { values: Float32Array.from(w.read().dataSync() as Float32Array), shape: [...w.shape] })
  }
  return out
}

/** The config entries that change what a layer computes in inference (not how it trains or was initialized). */
function computeConfig(config: LayerCall['config']): LayerCall['config'] {
  return Object.fromEntries(
    Object.entries(config).filter(([k]) => !/initializer|regularizer|constraint|trainable|dtype|^name$/i.test(k)),
  )
}

/** A compiled graph: the SavedModel bytes and what identifies them. */
export interface CompiledGraph {
  /** sha256 of what was compiled: compiler version, the plan (classes, configs, shapes, wiring) and all weights */
  contentSha256: string
  /** saved_model.pb */
  savedModel: Uint8Array
  /** bytes of weights held as constants */
  constBytes: number
  inputShape: number[]
  outputShape: number[]
}

/** Names of the graph's input and output: node names and `serving_default` signature keys. */
export interface GraphNames {
  input: string
  output: string
}

/**
 * Reads the plan's weights, fingerprints them and emits the SavedModel (input `x`, output `y` unless `names`
 * says otherwise; the names are not part of `contentSha256`, so cached graphs keep the defaults).
 */
export function compileGraph(plan: GraphPlan, names: GraphNames = { input: 'x', output: 'y' }): CompiledGraph {
  const hash = createHash('sha256')
  hash.update(`refit-graph-v${GRAPH_COMPILER_VERSION}\n`)
  hash.update(JSON.stringify({ input: plan.inputShape, output: plan.outputKey }))
  const g = new GraphBuilder()
  const x = g.placeholder(names.input, [-1, ...plan.inputShape])
  const tensors = new Map<string, string>([[plan.inputKey, x]])
  for (const step of plan.steps) {
    const weights = readWeights(step.layer)
    hash.update(JSON.stringify({ c: { ...step.call, config: computeConfig(step.call.config) }, i: step.inputs }))
    for (const [name, w] of [...weights].sort(([a], [b]) => a.localeCompare(b))) {
      hash.update(`${name}:${w.shape.join('x')}\n`)
      hash.update(new Uint8Array(w.values.buffer, w.values.byteOffset, w.values.byteLength))
    }
    const inputs = step.inputs.map((k) => tensors.get(k)!)
    tensors.set(step.key, GRAPH_LAYERS[step.call.className].translate(g, step.call, inputs, weights))
  }
  const y = g.node(names.output, 'Identity', [tensors.get(plan.outputKey)!], { T: attr.float() })
  return {
    contentSha256: hash.digest('hex'),
    savedModel: g.savedModel(
      { name: x, dims: [-1, ...plan.inputShape], key: names.input },
      { name: y, dims: [-1, ...plan.outputShape], key: names.output },
    ),
    constBytes: g.constBytes,
    inputShape: plan.inputShape,
    outputShape: plan.outputShape,
  }
}
