// The memory estimator's walk of a TF.js graph model's GraphDef (memory-estimate.ts walks Keras topologies):
// output shapes are inferred node by node for the ops image backbones use, channels-last; any other op keeps
// its first input's shape. Parameters are the Const nodes' elements. Feeds the same inference and evaluation
// estimates as layers models, so predictions and evaluations on graph models are budgeted too.
import type { LayerCost, TopologyCost } from '../memory-estimate.js'
import { type JsonNode, needed } from './graph-model.js'

/**
 * A graph model runs through a SavedModel session, which reuses intermediate buffers: mobilenet_v2_mid at 224x224
 * peaked at 10.9-12.4 MB per sample (batches of 16 and 64, VmHWM), 1.5-1.7 times its largest output
 * (112x112x144 floats); 2.5 keeps the estimate on the high side without refusing what runs.
 */
const GRAPH_DEEP_FACTOR = 2.5

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1)
const base = (i: string) => i.replace(/^\^/, '').replace(/:\d+$/, '')
const ints = (n: JsonNode, k: string) => (n.attr?.[k]?.list?.i ?? []).map(Number)
const str = (n: JsonNode, k: string) => Buffer.from(n.attr?.[k]?.s ?? '', 'base64').toString()

function out(size: number, k: number, stride: number, padding: string): number {
  return padding === 'VALID' ? Math.max(1, Math.ceil((size - k + 1) / stride)) : Math.ceil(size / stride)
}

/** Walks the GraphDef `nodes` for `inputShape` (without the batch dimension). */
export function analyzeGraphDef(graph: JsonNode[], inputShape: number[]): TopologyCost {
  // every node after its inputs (converters usually write them so, nothing promises it)
  const consumed = new Set(graph.flatMap((n) => (n.input ?? []).map(base)))
  const nodes = graph.filter((n) => !consumed.has(n.name)).flatMap((n) => needed(graph, n.name))
  const shapes = new Map<string, number[]>()
  const layers: LayerCost[] = []
  let params = 0
  let previous = inputShape
  for (const n of nodes) {
    if (n.op === 'Const') {
      const dims = (n.attr?.value?.tensor?.tensorShape?.dim ?? []).map((d) => Number(d.size))
      shapes.set(n.name, dims)
      if (n.attr?.dtype?.type === 'DT_FLOAT') params += prod(dims)
      continue
    }
    if (n.op === 'Placeholder') {
      shapes.set(n.name, inputShape)
      previous = inputShape
      continue
    }
    const inputs = (n.input ?? []).filter((i) => !i.startsWith('^')).map((i) => shapes.get(base(i)))
    const x = inputs[0] ?? previous
    const w = inputs[1] ?? []
    // elementwise ops broadcast: the output is the largest input (a Mul by a scalar Const keeps the image)
    let shape = inputs.reduce<number[]>((a, s) => (s && prod(s) > prod(a) ? s : a), x)
    let work = 0
    switch (n.op) {
      case 'Conv2D':
      case '_FusedConv2D':
      case 'DepthwiseConv2dNative':
      case 'FusedDepthwiseConv2dNative': {
        const [h, wd, cin] = x.length === 3 ? x : [1, 1, x.at(-1) ?? 1]
        const [kh, kw, , k3] = w.length === 4 ? w : [1, 1, cin, cin]
        const [, sh, sw] = ints(n, 'strides').length === 4 ? ints(n, 'strides') : [1, 1, 1]
        const pad = str(n, 'padding')
        const depthwise = n.op.includes('Depthwise')
        shape = [out(h, kh, sh, pad), out(wd, kw, sw, pad), depthwise ? cin * k3 : k3]
        if (!depthwise) work = shape[0] * shape[1] * kh * kw * cin
        break
      }
      case 'MaxPool':
      case 'AvgPool': {
        const [h, wd, c] = x.length === 3 ? x : [1, 1, x.at(-1) ?? 1]
        const [, kh, kw] = ints(n, 'ksize')
        const [, sh, sw] = ints(n, 'strides')
        const pad = str(n, 'padding')
        shape = [out(h, kh ?? 1, sh ?? 1, pad), out(wd, kw ?? 1, sw ?? 1, pad), c]
        break
      }
      case 'MatMul':
      case '_FusedMatMul':
        shape = [n.attr?.transpose_b?.b ? (w[0] ?? 1) : (w[1] ?? 1)]
        break
      case 'Mean':
      case 'Max':
      case 'Sum':
      case 'Squeeze':
      case 'Reshape':
        // image backbones reduce or flatten their spatial axes here
        shape = x.length === 3 && n.op !== 'Reshape' ? [x[2]] : [prod(x)]
        break
      case 'ConcatV2': {
        const parts = inputs.slice(0, -1).filter((s): s is number[] => !!s)
        shape = [...(parts[0] ?? x).slice(0, -1), parts.reduce((a, s) => a + (s.at(-1) ?? 0), 0)]
        break
      }
    }
    shapes.set(n.name, shape)
    previous = shape
    layers.push({
      name: n.name,
      className: n.op,
      outputShape: shape,
      outputElements: prod(shape),
      params: 0,
      workspaceElements: work,
    })
  }
  return { inputShape, inputElements: prod(inputShape), layers, params, deepFactor: GRAPH_DEEP_FACTOR }
}
