// A TF.js graph model (model.json with a JSON GraphDef `modelTopology` + weight shards, what
// `tensorflowjs_converter` makes from SavedModels and TF Hub modules) as a frozen TensorFlow SavedModel for the
// graph path: its JSON GraphDef becomes a binary one, its weights (dequantized) become the Const nodes' values,
// and the ops only TF.js knows are rewritten into TensorFlow ops (OP_REWRITES, the op-mapping table):
//
//   FusedDepthwiseConv2dNative [BiasAdd(, act)]  -> DepthwiseConv2dNative -> BiasAdd (-> act)
//   _FusedConv2D [BiasAdd(, act)]                -> Conv2D -> BiasAdd (-> act)
//   _FusedMatMul [BiasAdd(, act)]                -> MatMul -> BiasAdd (-> act)
//   act: Relu, Relu6, Elu, Selu, Sigmoid, Tanh, LeakyRelu (alpha from `leakyrelu_alpha`)
//
// Any other fused form (FusedBatchNorm, Prelu, several extra arguments) is refused naming the node. Only the
// nodes the chosen output depends on are kept, so cutting at the feature node drops the head.
import type { io } from '@tensorflow/tfjs'
import type { Tf } from '../tf.js'
import { attr, GraphBuilder, protobuf } from './graph-def.js'

type Pb = any

/** A node of a JSON GraphDef as tensorflowjs_converter writes it (protobuf JSON mapping). */
export interface JsonNode {
  name: string
  op: string
  input?: string[]
  device?: string
  attr?: Record<string, JsonAttr>
}

interface JsonAttr {
  list?: { i?: (string | number)[]; s?: string[]; f?: number[]; b?: boolean[]; type?: string[] }
  s?: string
  i?: string | number
  f?: number
  b?: boolean
  type?: string
  shape?: { dim?: { size: string | number }[]; unknownRank?: boolean }
  tensor?: { dtype: string; tensorShape?: { dim?: { size: string | number }[] } }
}

/** model.json of a TF.js graph model. */
export interface GraphModelJson {
  format?: string
  modelTopology: { node: JsonNode[]; versions?: unknown; library?: unknown }
  weightsManifest: io.WeightsManifestConfig
  userDefinedMetadata?: Record<string, unknown>
}

/** Why a graph model cannot run here: the node (and op) at fault. */
export interface GraphModelProblem {
  node: string | null
  op: string | null
  reason: string
}

/** What the converter found in a graph model: its input, output and default feature node. */
export interface GraphModelInfo {
  input: { name: string; shape: number[] }
  /** the model's output node (the last node nothing consumes) */
  output: string
  /** the input of the last MatMul (or _FusedMatMul): the default `feature_layer` */
  featureNode: string | null
}

const ACTIVATIONS = new Set(['Relu', 'Relu6', 'Elu', 'Selu', 'Sigmoid', 'Tanh', 'LeakyRelu'])

/** TF.js-only ops and the TensorFlow op their main computation becomes (the rest: BiasAdd and an activation). */
export const OP_REWRITES: Record<string, { op: string; attrs: string[] }> = {
  FusedDepthwiseConv2dNative: {
    op: 'DepthwiseConv2dNative',
    attrs: ['T', 'strides', 'padding', 'explicit_paddings', 'data_format', 'dilations'],
  },
  _FusedConv2D: {
    op: 'Conv2D',
    attrs: ['T', 'strides', 'padding', 'explicit_paddings', 'data_format', 'dilations', 'use_cudnn_on_gpu'],
  },
  _FusedMatMul: { op: 'MatMul', attrs: ['T', 'transpose_a', 'transpose_b'] },
}

export const baseName = (input: string) => input.replace(/^\^/, '').replace(/:\d+$/, '')

function fusedOps(n: JsonNode): string[] {
  return (n.attr?.fused_ops?.list?.s ?? []).map((s) => Buffer.from(s, 'base64').toString())
}

function dims(shape: JsonAttr['shape'] | undefined): number[] {
  return (shape?.dim ?? []).map((d) => Number(d.size))
}

/** The nodes `output` depends on (inputs and control inputs), every node after its inputs. */
export function needed(nodes: JsonNode[], output: string): JsonNode[] {
  const byName = new Map(nodes.map((n) => [n.name, n]))
  const order: JsonNode[] = []
  const state = new Map<string, 'open' | 'done'>()
  // iterative post-order DFS: graphs are deep (one node per op), recursion could overflow
  const stack: { name: string; expanded: boolean }[] = [{ name: output, expanded: false }]
  while (stack.length) {
    const top = stack.pop()!
    const n = byName.get(top.name)
    if (!n || state.get(top.name) === 'done') continue
    if (top.expanded) {
      state.set(top.name, 'done')
      order.push(n)
      continue
    }
    if (state.get(top.name) === 'open') continue // a cycle: not a frozen inference graph; left to TensorFlow
    state.set(top.name, 'open')
    stack.push({ name: top.name, expanded: true })
    for (const i of [...(n.input ?? [])].reverse())
      if (!state.has(baseName(i))) stack.push({ name: baseName(i), expanded: false })
  }
  return order
}

/** A node's fused form is one we rewrite; null when fine, else why not. */
function checkNode(n: JsonNode): string | null {
  if (!(n.op in OP_REWRITES)) return null
  const fused = fusedOps(n)
  const numArgs = Number(n.attr?.num_args?.i ?? 0)
  if (fused[0] !== 'BiasAdd' || fused.length > 2 || numArgs !== 1 || (fused[1] && !ACTIVATIONS.has(fused[1])))
    return `fused form [${fused.join(', ')}] with ${numArgs} extra argument(s) has no TensorFlow rewrite (only BiasAdd, optionally followed by ${[...ACTIVATIONS].join('/')})`
  return null
}

/** Reads the input, output and default feature node of a graph model; a problem names the node at fault. */
export function inspectGraphModel(json: GraphModelJson): GraphModelInfo | GraphModelProblem {
  const nodes = json.modelTopology?.node
  if (!Array.isArray(nodes) || nodes.length === 0)
    return { node: null, op: null, reason: 'modelTopology holds no GraphDef nodes' }
  const placeholders = nodes.filter((n) => n.op === 'Placeholder')
  if (placeholders.length !== 1)
    return { node: null, op: 'Placeholder', reason: `the graph has ${placeholders.length} inputs (one is supported)` }
  const consumed = new Set(nodes.flatMap((n) => (n.input ?? []).map(baseName)))
  const outputs = nodes.filter((n) => !consumed.has(n.name) && n.op !== 'Const' && n.op !== 'Placeholder')
  if (outputs.length !== 1)
    return { node: null, op: null, reason: `the graph has ${outputs.length} outputs (one is supported)` }
  for (const n of needed(nodes, outputs[0].name)) {
    const why = checkNode(n)
    if (why) return { node: n.name, op: n.op, reason: why }
  }
  const matmuls = nodes.filter((n) => n.op === 'MatMul' || n.op === '_FusedMatMul')
  const last = matmuls.at(-1)
  return {
    input: { name: placeholders[0].name, shape: dims(placeholders[0].attr?.shape?.shape).slice(1) },
    output: outputs[0].name,
    featureNode: last?.input?.[0] ? baseName(last.input[0]) : null,
  }
}

/**
 * The op that computes the graph's output, looking through Identity nodes (e.g. `Softmax` for a classifier
 * whose output is class probabilities); null when the output node is missing.
 */
export function outputOp(json: GraphModelJson, output: string): string | null {
  const byName = new Map(json.modelTopology.node.map((n) => [n.name, n]))
  let n = byName.get(output)
  for (let hops = 0; n && n.op === 'Identity' && hops < 100; hops++) n = byName.get(baseName(n.input?.[0] ?? ''))
  return n?.op ?? null
}

export function isGraphModelProblem(x: GraphModelInfo | GraphModelProblem): x is GraphModelProblem {
  return (x as GraphModelProblem).reason !== undefined
}

const DTYPES: Record<string, string> = {
  DT_FLOAT: 'DT_FLOAT',
  DT_INT32: 'DT_INT32',
  DT_BOOL: 'DT_BOOL',
  DT_INT64: 'DT_INT64',
  DT_STRING: 'DT_STRING',
}

/** A JSON attribute value as the protobuf AttrValue (Const `value`s are filled from the weights instead). */
function attrOf(P: Pb, a: JsonAttr): Pb {
  const v = new P.AttrValue()
  if (a.list) {
    const l = new P.AttrValue.ListValue()
    if (a.list.i) l.setIList(a.list.i.map(Number))
    if (a.list.s) l.setSList(a.list.s.map((s) => Buffer.from(s, 'base64')))
    if (a.list.f) l.setFList(a.list.f)
    if (a.list.b) l.setBList(a.list.b)
    if (a.list.type) l.setTypeList(a.list.type.map((t) => P.DataType[t]))
    v.setList(l)
  } else if (a.s !== undefined) v.setS(Buffer.from(a.s, 'base64'))
  else if (a.i !== undefined) v.setI(Number(a.i))
  else if (a.f !== undefined) v.setF(a.f)
  else if (a.b !== undefined) v.setB(a.b)
  else if (a.type !== undefined) v.setType(P.DataType[DTYPES[a.type] ?? a.type])
  else if (a.shape !== undefined) {
    const s = new P.TensorShape()
    if (a.shape.unknownRank) s.setUnknownRank(true)
    else
      s.setDimList(
        dims(a.shape).map((d) => {
          const x = new P.TensorShape.Dim()
          x.setSize(d)
          return x
        }),
      )
    v.setShape(s)
  } else {
    // an empty list ({"list": {}}) or an attribute kind not written above: an empty list is what both mean
    v.setList(new P.AttrValue.ListValue())
  }
  return v
}

/**
 * Compiles the graph model up to `output` (a node name; default the model's output) into a frozen SavedModel
 * with the signature `x` -> `y` (the graph path's convention; `keys` renames them, as exports do). `weights`: the concatenated weight shards.
 * `outputShape`: the output's per-sample shape (the caller measures it, e.g. with tf.loadGraphModel).
 */
export function graphModelSavedModel(
  tf: Tf,
  json: GraphModelJson,
  weights: ArrayBuffer,
  opts: { output?: string; outputShape: number[]; keys?: { input: string; output: string } },
): Uint8Array {
  const info = inspectGraphModel(json)
  if (isGraphModelProblem(info)) throw new Error(`${info.node ?? 'graph'}: ${info.reason}`)
  const output = opts.output ?? info.output
  const specs = json.weightsManifest.flatMap((g) => g.weights)
  const values = tf.io.decodeWeights(weights, specs)
  const g = new GraphBuilder()
  const P = protobuf()
  const names = new Map<string, string>()
  const ref = (input: string) => {
    const ctrl = input.startsWith('^') ? '^' : ''
    const m = /^(.*?)(:\d+)?$/.exec(input.replace(/^\^/, ''))!
    const mapped = names.get(m[1])
    if (mapped === undefined) throw new Error(`input ${input} comes before its node`)
    return `${ctrl}${mapped}${m[2] ?? ''}`
  }
  const nodes = needed(json.modelTopology.node, output)
  if (!nodes.some((n) => n.name === output)) throw new Error(`the graph has no node named ${output}`)
  for (const n of nodes) {
    const attrs: Record<string, Pb> = {}
    for (const [k, a] of Object.entries(n.attr ?? {})) if (k !== 'value') attrs[k] = attrOf(P, a)
    if (n.op === 'Const') {
      const t = values[n.name]
      if (!t) throw new Error(`Const ${n.name} has no weights in the manifest`)
      const data = t.dataSync()
      const tensorDims = t.shape
      names.set(
        n.name,
        t.dtype === 'int32'
          ? g.constInt(n.name, Array.from(data as Int32Array), tensorDims)
          : g.constFloat(n.name, Float32Array.from(data as Float32Array), tensorDims),
      )
      continue
    }
    const inputs = (n.input ?? []).map(ref)
    const rewrite = OP_REWRITES[n.op]
    if (!rewrite) {
      names.set(n.name, g.node(n.name, n.op, inputs, attrs))
      continue
    }
    const why = checkNode(n)
    if (why) throw new Error(`${n.name} (${n.op}): ${why}`)
    const mainAttrs = Object.fromEntries(rewrite.attrs.filter((k) => attrs[k]).map((k) => [k, attrs[k]]))
    const [act] = fusedOps(n).slice(1)
    const main = g.node(`${n.name}/${rewrite.op}`, rewrite.op, inputs.slice(0, 2), mainAttrs)
    const withBias = g.node(act ? `${n.name}/BiasAdd` : n.name, 'BiasAdd', [main, inputs[2]], {
      T: attr.float(),
      ...(attrs.data_format && rewrite.op !== 'MatMul' ? { data_format: attrs.data_format } : {}),
    })
    if (!act) {
      names.set(n.name, withBias)
      continue
    }
    const actAttrs: Record<string, Pb> = { T: attr.float() }
    if (act === 'LeakyRelu') actAttrs.alpha = attr.f(n.attr?.leakyrelu_alpha?.f ?? 0.2)
    names.set(n.name, g.node(n.name, act, [withBias], actAttrs))
  }
  tf.dispose(Object.values(values))
  const y = g.node(opts.keys?.output ?? 'y', 'Identity', [names.get(output)!], { T: attr.float() })
  return g.savedModel(
    { name: names.get(info.input.name)!, dims: [-1, ...info.input.shape], key: opts.keys?.input },
    { name: y, dims: [-1, ...opts.outputShape], key: opts.keys?.output },
  )
}
