// How each Keras / TF.js layer class becomes TensorFlow graph ops in inference mode (BatchNorm on its moving
// statistics, dropout off). The table is the coverage list: a layer class not in it, or a configuration its
// `check` refuses, keeps the whole model on the eager path, and the reason names the layer.
import { attr, type GraphBuilder } from './graph-def.js'

/** A layer as the translator sees it: class, config (camelCase, as `getConfig()` gives), shapes of this call. */
export interface LayerCall {
  name: string
  className: string
  config: Record<string, any>
  /** per input, with the batch dimension (null) first */
  inputShapes: (number | null)[][]
  outputShape: (number | null)[]
}

/** A weight by its short name (`kernel`, `bias`, `gamma`, `moving_mean`, `depthwise_kernel`, ...). */
export interface Weight {
  values: Float32Array
  shape: number[]
}

export interface LayerRule {
  /** null when the config is supported, else why not (checked before any weight is read) */
  check?: (l: LayerCall) => string | null
  /** emits the ops; returns the output tensor's node name */
  translate: (g: GraphBuilder, l: LayerCall, inputs: string[], weights: Map<string, Weight>) => string
}

const T = () => ({ T: attr.float() })

/** Activation names of `Activation` layers and of the `activation` option of Conv/Dense layers. */
const ACTIVATIONS: Record<string, ((g: GraphBuilder, hint: string, x: string) => string) | null> = {
  linear: null,
  relu: (g, h, x) => g.node(`${h}/Relu`, 'Relu', [x], T()),
  relu6: (g, h, x) => g.node(`${h}/Relu6`, 'Relu6', [x], T()),
  sigmoid: (g, h, x) => g.node(`${h}/Sigmoid`, 'Sigmoid', [x], T()),
  tanh: (g, h, x) => g.node(`${h}/Tanh`, 'Tanh', [x], T()),
  softmax: (g, h, x) => g.node(`${h}/Softmax`, 'Softmax', [x], T()),
  elu: (g, h, x) => g.node(`${h}/Elu`, 'Elu', [x], T()),
  selu: (g, h, x) => g.node(`${h}/Selu`, 'Selu', [x], T()),
  softplus: (g, h, x) => g.node(`${h}/Softplus`, 'Softplus', [x], T()),
  softsign: (g, h, x) => g.node(`${h}/Softsign`, 'Softsign', [x], T()),
  // tfjs and Keras: x * sigmoid(x)
  swish: (g, h, x) => g.node(`${h}/swish`, 'Mul', [x, g.node(`${h}/Sigmoid`, 'Sigmoid', [x], T())], T()),
}

function activationName(config: LayerCall['config']): string {
  const a = config.activation
  if (a == null) return 'linear'
  return typeof a === 'string' ? a : String(a.className ?? a.class_name ?? a)
}

function checkActivation(l: LayerCall): string | null {
  const a = activationName(l.config)
  return a in ACTIVATIONS ? null : `activation "${a}" has no graph translation`
}

function applyActivation(g: GraphBuilder, l: LayerCall, x: string): string {
  const f = ACTIVATIONS[activationName(l.config)]
  return f ? f(g, l.name, x) : x
}

function channelsLast(l: LayerCall): string | null {
  const f = l.config.dataFormat
  return f == null || f === 'channelsLast' ? null : `data format ${f} (only channels_last runs as a graph)`
}

function pair(v: number | number[] | undefined, fallback: number): [number, number] {
  if (v == null) return [fallback, fallback]
  return Array.isArray(v) ? [v[0], v[1] ?? v[0]] : [v, v]
}

function padding(l: LayerCall): string {
  return String(l.config.padding).toUpperCase()
}

function checkConv(l: LayerCall): string | null {
  if (l.inputShapes[0]?.length !== 4) return `input rank ${l.inputShapes[0]?.length} (a 2-D convolution takes rank 4)`
  if (!['same', 'valid'].includes(l.config.padding)) return `padding "${l.config.padding}"`
  return channelsLast(l) ?? checkActivation(l)
}

function weight(w: Map<string, Weight>, l: LayerCall, key: string): Weight {
  const v = w.get(key)
  if (!v) throw new Error(`layer ${l.name} has no weight "${key}"`)
  return v
}

function biasAndActivation(g: GraphBuilder, l: LayerCall, x: string, w: Map<string, Weight>): string {
  let y = x
  const bias = l.config.useBias === false ? undefined : w.get('bias')
  if (bias) {
    const b = g.constFloat(`${l.name}/bias`, bias.values, bias.shape)
    y = g.node(`${l.name}/BiasAdd`, 'BiasAdd', [y, b], { ...T(), data_format: attr.s('NHWC') })
  }
  return applyActivation(g, l, y)
}

function convAttrs(l: LayerCall) {
  const [sh, sw] = pair(l.config.strides, 1)
  const [dh, dw] = pair(l.config.dilationRate, 1)
  return {
    ...T(),
    strides: attr.ints([1, sh, sw, 1]),
    dilations: attr.ints([1, dh, dw, 1]),
    padding: attr.s(padding(l)),
    data_format: attr.s('NHWC'),
  }
}

function constOf(g: GraphBuilder, hint: string, w: Weight): string {
  return g.constFloat(hint, w.values, w.shape)
}

function checkPool(l: LayerCall): string | null {
  if (l.inputShapes[0]?.length !== 4) return `input rank ${l.inputShapes[0]?.length} (2-D pooling takes rank 4)`
  if (!['same', 'valid'].includes(l.config.padding)) return `padding "${l.config.padding}"`
  return channelsLast(l)
}

function pool(op: 'MaxPool' | 'AvgPool') {
  return (g: GraphBuilder, l: LayerCall, [x]: string[]) => {
    const [ph, pw] = pair(l.config.poolSize, 2)
    const [sh, sw] = pair(l.config.strides ?? l.config.poolSize, 2)
    return g.node(`${l.name}/${op}`, op, [x], {
      ...T(),
      ksize: attr.ints([1, ph, pw, 1]),
      strides: attr.ints([1, sh, sw, 1]),
      padding: attr.s(padding(l)),
      data_format: attr.s('NHWC'),
    })
  }
}

function globalPool(op: 'Mean' | 'Max') {
  return (g: GraphBuilder, l: LayerCall, [x]: string[]) => {
    const axes = g.constInt(`${l.name}/axes`, [1, 2], [2])
    return g.node(`${l.name}/${op}`, op, [x, axes], { ...T(), Tidx: attr.int32(), keep_dims: attr.b(false) })
  }
}

/** Output shape without the batch dimension; null when a dimension is unknown. */
function staticTail(shape: (number | null)[]): number[] | null {
  const tail = shape.slice(1)
  return tail.every((d) => typeof d === 'number' && d >= 0) ? (tail as number[]) : null
}

function reshapeTo(g: GraphBuilder, l: LayerCall, x: string): string {
  const tail = staticTail(l.outputShape)!
  const shape = g.constInt(`${l.name}/shape`, [-1, ...tail], [tail.length + 1])
  return g.node(`${l.name}/Reshape`, 'Reshape', [x, shape], { ...T(), Tshape: attr.int32() })
}

function checkStaticOutput(l: LayerCall): string | null {
  return staticTail(l.outputShape) ? null : `output shape [${l.outputShape}] is not fully known`
}

const identity = (_g: GraphBuilder, _l: LayerCall, [x]: string[]) => x

/** Supported layer classes, by `getClassName()` (RefitDropout saves as Dropout but is its own class in memory). */
export const GRAPH_LAYERS: Record<string, LayerRule> = {
  Conv2D: {
    check: checkConv,
    translate: (g, l, [x], w) => {
      const k = constOf(g, `${l.name}/kernel`, weight(w, l, 'kernel'))
      return biasAndActivation(g, l, g.node(`${l.name}/Conv2D`, 'Conv2D', [x, k], convAttrs(l)), w)
    },
  },
  DepthwiseConv2D: {
    check: checkConv,
    translate: (g, l, [x], w) => {
      const k = constOf(g, `${l.name}/depthwise_kernel`, weight(w, l, 'depthwise_kernel'))
      return biasAndActivation(g, l, g.node(`${l.name}/depthwise`, 'DepthwiseConv2dNative', [x, k], convAttrs(l)), w)
    },
  },
  SeparableConv2D: {
    check: checkConv,
    translate: (g, l, [x], w) => {
      const dk = constOf(g, `${l.name}/depthwise_kernel`, weight(w, l, 'depthwise_kernel'))
      const pk = constOf(g, `${l.name}/pointwise_kernel`, weight(w, l, 'pointwise_kernel'))
      const d = g.node(`${l.name}/depthwise`, 'DepthwiseConv2dNative', [x, dk], convAttrs(l))
      const p = g.node(`${l.name}/pointwise`, 'Conv2D', [d, pk], {
        ...T(),
        strides: attr.ints([1, 1, 1, 1]),
        dilations: attr.ints([1, 1, 1, 1]),
        padding: attr.s('VALID'),
        data_format: attr.s('NHWC'),
      })
      return biasAndActivation(g, l, p, w)
    },
  },
  Dense: {
    check: (l) =>
      l.inputShapes[0]?.length !== 2
        ? `input rank ${l.inputShapes[0]?.length} (only rank-2 inputs run as a graph)`
        : checkActivation(l),
    translate: (g, l, [x], w) => {
      const k = constOf(g, `${l.name}/kernel`, weight(w, l, 'kernel'))
      const y = g.node(`${l.name}/MatMul`, 'MatMul', [x, k], {
        ...T(),
        transpose_a: attr.b(false),
        transpose_b: attr.b(false),
      })
      return biasAndActivation(g, l, y, w)
    },
  },
  BatchNormalization: {
    check: (l) => {
      const rank = l.inputShapes[0]?.length ?? 0
      const axis = l.config.axis ?? -1
      return axis === -1 || axis === rank - 1 ? null : `axis ${axis} (only the last axis runs as a graph)`
    },
    // Inference mode folded into one scale and one offset per channel: x * s + o with
    // s = gamma / sqrt(var + eps), o = beta - mean * s, computed in float64 here.
    translate: (g, l, [x], w) => {
      const mean = weight(w, l, 'moving_mean').values
      const variance = weight(w, l, 'moving_variance').values
      const gamma = l.config.scale === false ? null : (w.get('gamma')?.values ?? null)
      const beta = l.config.center === false ? null : (w.get('beta')?.values ?? null)
      const eps = Number(l.config.epsilon ?? 1e-3)
      const n = mean.length
      const scale = new Float32Array(n)
      const offset = new Float32Array(n)
      for (let i = 0; i < n; i++) {
        const s = (gamma ? gamma[i] : 1) / Math.sqrt(variance[i] + eps)
        scale[i] = s
        offset[i] = (beta ? beta[i] : 0) - mean[i] * s
      }
      const s = g.constFloat(`${l.name}/scale`, scale, [n])
      const o = g.constFloat(`${l.name}/offset`, offset, [n])
      return g.node(`${l.name}/add`, 'AddV2', [g.node(`${l.name}/mul`, 'Mul', [x, s], T()), o], T())
    },
  },
  ReLU: {
    check: (l) => (l.config.maxValue == null || l.config.maxValue >= 0 ? null : `maxValue ${l.config.maxValue}`),
    translate: (g, l, [x]) => {
      const m = l.config.maxValue
      if (m === 6) return g.node(`${l.name}/Relu6`, 'Relu6', [x], T())
      const r = g.node(`${l.name}/Relu`, 'Relu', [x], T())
      if (m == null) return r
      const c = g.constFloat(`${l.name}/max`, Float32Array.of(m), [])
      return g.node(`${l.name}/Minimum`, 'Minimum', [r, c], T())
    },
  },
  LeakyReLU: {
    translate: (g, l, [x]) =>
      g.node(`${l.name}/LeakyRelu`, 'LeakyRelu', [x], { ...T(), alpha: attr.f(Number(l.config.alpha ?? 0.3)) }),
  },
  Activation: { check: checkActivation, translate: (g, l, [x]) => applyActivation(g, l, x) },
  Softmax: {
    check: (l) => {
      const axis = l.config.axis ?? -1
      const rank = l.inputShapes[0]?.length ?? 0
      return axis === -1 || axis === rank - 1 ? null : `axis ${axis}`
    },
    translate: (g, l, [x]) => g.node(`${l.name}/Softmax`, 'Softmax', [x], T()),
  },
  ZeroPadding2D: {
    check: channelsLast,
    translate: (g, l, [x]) => {
      const p = l.config.padding
      const [[t, b], [left, right]] = Array.isArray(p)
        ? p.map((v: number | number[]) => (Array.isArray(v) ? v : [v, v]))
        : [
            [p, p],
            [p, p],
          ]
      const paddings = g.constInt(`${l.name}/paddings`, [0, 0, t, b, left, right, 0, 0], [4, 2])
      return g.node(`${l.name}/Pad`, 'Pad', [x, paddings], { ...T(), Tpaddings: attr.int32() })
    },
  },
  Add: {
    translate: (g, l, xs) =>
      xs.length === 2
        ? g.node(`${l.name}/AddV2`, 'AddV2', xs, T())
        : g.node(`${l.name}/AddN`, 'AddN', xs, { ...T(), N: attr.int(xs.length) }),
  },
  Multiply: {
    translate: (g, l, xs) => xs.slice(1).reduce((acc, x) => g.node(`${l.name}/Mul`, 'Mul', [acc, x], T()), xs[0]),
  },
  Concatenate: {
    translate: (g, l, xs) => {
      const rank = l.outputShape.length
      const axis = Number(l.config.axis ?? -1)
      const a = g.constInt(`${l.name}/axis`, [axis < 0 ? axis + rank : axis], [])
      return g.node(`${l.name}/ConcatV2`, 'ConcatV2', [...xs, a], {
        ...T(),
        N: attr.int(xs.length),
        Tidx: attr.int32(),
      })
    },
  },
  MaxPooling2D: { check: checkPool, translate: pool('MaxPool') },
  AveragePooling2D: { check: checkPool, translate: pool('AvgPool') },
  GlobalAveragePooling2D: {
    check: (l) => channelsLast(l) ?? (l.config.keepDims ? 'keepDims' : null),
    translate: globalPool('Mean'),
  },
  GlobalMaxPooling2D: {
    check: (l) => channelsLast(l) ?? (l.config.keepDims ? 'keepDims' : null),
    translate: globalPool('Max'),
  },
  Flatten: { check: (l) => channelsLast(l) ?? checkStaticOutput(l), translate: (g, l, [x]) => reshapeTo(g, l, x) },
  Reshape: { check: checkStaticOutput, translate: (g, l, [x]) => reshapeTo(g, l, x) },
  Rescaling: {
    translate: (g, l, [x]) => {
      const s = g.constFloat(`${l.name}/scale`, Float32Array.of(Number(l.config.scale)), [])
      const o = g.constFloat(`${l.name}/offset`, Float32Array.of(Number(l.config.offset ?? 0)), [])
      return g.node(`${l.name}/add`, 'AddV2', [g.node(`${l.name}/mul`, 'Mul', [x, s], T()), o], T())
    },
  },
  // inference mode: the identity
  Dropout: { translate: identity },
  RefitDropout: { translate: identity },
  SpatialDropout1D: { translate: identity },
  SpatialDropout2D: { translate: identity },
  GaussianNoise: { translate: identity },
  GaussianDropout: { translate: identity },
  AlphaDropout: { translate: identity },
}
