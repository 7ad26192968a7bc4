// What a model will cost in memory, from its Keras topology alone: no TensorFlow.js, no tensor allocated, so
// the API can refuse a job, an upload or a prediction before anything is queued or forked. Shapes are
// inferred layer by layer (channels-last, as TF.js layers models are); parameters come from the layer
// configs, or from the weights manifest when there is one. The constants below were fitted against the
// peak RSS of real training and inference processes (bench/memory.ts, bench/results/memory.json): the
// estimate is meant to be within 2x of what the kernel sees, and on the high side.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fitShape } from '../datasets/limits.js'
import { analyzeGraphDef } from './graph/graph-memory.js'
import type { JsonNode } from './graph/graph-model.js'
import type { ArchitectureId, OptimizerName } from './protocol.js'

/** One layer as the estimator sees it: its output size per sample and its parameter count. */
export interface LayerCost {
  name: string
  className: string
  /** output shape without the batch dimension */
  outputShape: number[]
  /** output values per sample */
  outputElements: number
  params: number
  /** values per sample of scratch space the kernel needs (im2col patches of a convolution) */
  workspaceElements: number
}

/** A topology walked for one input shape. */
export interface TopologyCost {
  inputShape: number[]
  inputElements: number
  layers: LayerCost[]
  params: number
  /** copies of the largest output a deep pass holds at its peak, when not INFER_DEEP_FACTOR (graph sessions) */
  deepFactor?: number
}

/** Bytes a process will hold, by kind, and their sum. */
export interface MemoryEstimate {
  /** the process itself: Node, the TF.js native runtime, sharp */
  runtimeBytes: number
  parameterBytes: number
  gradientBytes: number
  optimizerBytes: number
  activationBytes: number
  /** samples held in memory (training files, cached features, teacher outputs) */
  dataBytes: number
  totalBytes: number
}

/** A Keras layers topology (the `modelTopology` of a model.json, or `model_config` inside it). */
export type Topology = Record<string, unknown>

const F32 = 4
/** RSS of an idle training or inference process after its backend self-test (tfjs-node, sharp loaded). */
export const RUNTIME_BYTES = 450 * 1024 ** 2
/**
 * Tensors a training step keeps per layer output until its gradient is taken: conv/dense + bias + activation
 * are three tensors of the output's size; backward passes then hold gradients of about the same sizes.
 */
const TRAIN_TAPE_FACTOR = 2.5
/**
 * A model read from its files is held three times at the peak of the load: the file's bytes, the decoded
 * weights and the tensors made from them (a 305 MiB dense model takes an inference process from 463 to
 * 1,384 MiB). The first two are garbage once it is loaded, but the watchdog sees the peak.
 */
const LOAD_COPIES = 3

/**
 * Compiling a model into a TensorFlow graph (engine/graph) holds, at its peak, about seven more copies of its
 * weights: the float32 copies read for the GraphDef, its serialized bytes, and TensorFlow's own while it parses,
 * imports, optimizes and materializes the constants (bench/memory.ts, processes with no limit, so every model
 * compiles: a 305 MiB dense model peaks at 3,476 MiB, 1,366 MiB estimated without the compile; 95 MiB: 1,385
 * vs 737). One copy stays, the session's constants. An inference process compiles a model only when this fits
 * its INFERENCE_MEMORY_BYTES, else runs it eager (src/inference/compute.ts).
 */
export const GRAPH_COMPILE_WEIGHT_COPIES = 7
/** An inference pass inside `tf.tidy` keeps every intermediate until the pass ends. */
const INFER_FACTOR = 1.5
/** ...but no more than this many copies of its largest layer output (measured on MobileNetV2: ~6). */
const INFER_DEEP_FACTOR = 6

type Json = Record<string, unknown>
const isRecord = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1)

function pair(v: unknown, fallback: number): [number, number] {
  if (typeof v === 'number') return [v, v]
  if (Array.isArray(v) && v.length >= 2) return [Number(v[0]), Number(v[1])]
  if (Array.isArray(v) && v.length === 1) return [Number(v[0]), Number(v[0])]
  return [fallback, fallback]
}

function convOut(size: number, k: number, stride: number, padding: unknown, dilation = 1): number {
  if (padding === 'same') return Math.ceil(size / stride)
  const eff = (k - 1) * dilation + 1
  return Math.max(0, Math.floor((size - eff) / stride) + 1)
}

/** Output shape and parameter count of one layer for its input shapes (channels-last). */
function layerShape(className: string, c: Json, inputs: number[][]): { shape: number[]; params: number; work: number } {
  const x = inputs[0] ?? []
  const bias = c.use_bias === false ? 0 : 1
  switch (className) {
    case 'Dense': {
      const units = Number(c.units)
      const fanIn = x.at(-1) ?? 1
      return { shape: [...x.slice(0, -1), units], params: fanIn * units + bias * units, work: 0 }
    }
    case 'Conv2D':
    case 'SeparableConv2D':
    case 'DepthwiseConv2D':
    case 'Conv2DTranspose': {
      const [h, w, cin] = x.length === 3 ? x : [1, 1, x.at(-1) ?? 1]
      const [kh, kw] = pair(c.kernel_size, 1)
      const [sh, sw] = pair(c.strides, 1)
      const [dh, dw] = pair(c.dilation_rate, 1)
      const dm = Number(c.depth_multiplier ?? 1)
      const filters = className === 'DepthwiseConv2D' ? cin * dm : Number(c.filters)
      let oh: number
      let ow: number
      if (className === 'Conv2DTranspose') {
        oh = c.padding === 'same' ? h * sh : h * sh + Math.max(kh - sh, 0)
        ow = c.padding === 'same' ? w * sw : w * sw + Math.max(kw - sw, 0)
      } else {
        oh = convOut(h, kh, sh, c.padding, dh)
        ow = convOut(w, kw, sw, c.padding, dw)
      }
      let params: number
      if (className === 'DepthwiseConv2D') params = kh * kw * cin * dm + bias * filters
      else if (className === 'SeparableConv2D') params = kh * kw * cin * dm + cin * dm * filters + bias * filters
      else params = kh * kw * cin * filters + bias * filters
      // A k x k convolution lowers to a matrix product over image patches (im2col); 1x1 and depthwise need none.
      const work = kh * kw > 1 && className !== 'DepthwiseConv2D' ? oh * ow * kh * kw * cin : 0
      return { shape: [oh, ow, filters], params, work }
    }
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      const [h, w, ch] = x
      const [ph, pw] = pair(c.pool_size, 2)
      const [sh, sw] = c.strides == null ? [ph, pw] : pair(c.strides, ph)
      return { shape: [convOut(h, ph, sh, c.padding), convOut(w, pw, sw, c.padding), ch], params: 0, work: 0 }
    }
    case 'GlobalAveragePooling2D':
    case 'GlobalMaxPooling2D':
    case 'GlobalAveragePooling1D':
    case 'GlobalMaxPooling1D':
      return { shape: [x.at(-1) ?? 1], params: 0, work: 0 }
    case 'Flatten':
      return { shape: [prod(x)], params: 0, work: 0 }
    case 'Reshape': {
      const target = (Array.isArray(c.target_shape) ? c.target_shape : [prod(x)]) as number[]
      const known = prod(target.filter((d) => d > 0))
      return { shape: target.map((d) => (d > 0 ? d : Math.max(1, prod(x) / known))), params: 0, work: 0 }
    }
    case 'ZeroPadding2D':
    case 'Cropping2D': {
      const raw = className === 'ZeroPadding2D' ? c.padding : c.cropping
      let pads: [[number, number], [number, number]]
      if (typeof raw === 'number')
        pads = [
          [raw, raw],
          [raw, raw],
        ]
      else if (Array.isArray(raw) && typeof raw[0] === 'number')
        pads = [
          [Number(raw[0]), Number(raw[0])],
          [Number(raw[1]), Number(raw[1])],
        ]
      else if (Array.isArray(raw)) pads = [pair(raw[0], 0), pair(raw[1], 0)]
      else
        pads = [
          [1, 1],
          [1, 1],
        ]
      const sign = className === 'ZeroPadding2D' ? 1 : -1
      const [h, w, ch] = x
      return {
        shape: [h + sign * (pads[0][0] + pads[0][1]), w + sign * (pads[1][0] + pads[1][1]), ch],
        params: 0,
        work: 0,
      }
    }
    case 'UpSampling2D': {
      const [fh, fw] = pair(c.size, 2)
      return { shape: [x[0] * fh, x[1] * fw, x[2]], params: 0, work: 0 }
    }
    case 'Concatenate': {
      const out = [...x]
      out[out.length - 1] = inputs.reduce((a, s) => a + (s.at(-1) ?? 0), 0)
      return { shape: out, params: 0, work: 0 }
    }
    case 'BatchNormalization': {
      const ch = x.at(-1) ?? 1
      const n = 2 + (c.center === false ? 0 : 1) + (c.scale === false ? 0 : 1)
      return { shape: x, params: n * ch, work: 0 }
    }
    case 'LayerNormalization': {
      const ch = x.at(-1) ?? 1
      return { shape: x, params: 2 * ch, work: 0 }
    }
    case 'PReLU':
      return { shape: x, params: prod(x), work: 0 }
    default:
      // activations, dropout, noise, Add/Multiply/Average/Maximum, RefitDropout...: output like the input
      return { shape: x, params: 0, work: 0 }
  }
}

/** `modelTopology` as stored in a model.json, unwrapped from Keras's `model_config` when present. */
export function unwrapTopology(modelTopology: unknown): Topology {
  if (isRecord(modelTopology) && isRecord(modelTopology.model_config)) return modelTopology.model_config
  if (!isRecord(modelTopology)) throw new Error('modelTopology is not an object')
  return modelTopology
}

/** Names of the layers feeding a functional layer (Keras 2 `[[name, node, tensor, kwargs]]` or Keras 3). */
function inboundNames(layer: Json): string[] | null {
  const nodes = layer.inbound_nodes
  if (!Array.isArray(nodes) || nodes.length === 0) return null
  const node = nodes[0]
  const names: string[] = []
  const visit = (v: unknown) => {
    if (Array.isArray(v)) {
      if (typeof v[0] === 'string' && typeof v[1] === 'number') names.push(v[0])
      else v.forEach(visit)
    } else if (isRecord(v)) {
      const hist = isRecord(v.config) ? v.config.keras_history : undefined
      if (Array.isArray(hist) && typeof hist[0] === 'string') names.push(hist[0])
      else if (Array.isArray(v.args)) v.args.forEach(visit)
    }
  }
  visit(node)
  return names.length ? names : null
}

/** The layers of a topology, in order, with nested Sequential/Functional models flattened. */
function flattenLayers(topology: Topology): Json[] {
  const config = topology.config
  const layers = (Array.isArray(config) ? config : isRecord(config) ? config.layers : undefined) as unknown
  if (!Array.isArray(layers)) throw new Error('the topology has no layers')
  return layers.filter(isRecord)
}

/**
 * Walks a topology for `inputShape` (without the batch dimension; it overrides any size the model leaves
 * open) and returns every layer's output size and parameters.
 */
export function analyzeTopology(topology: Topology, inputShape: number[]): TopologyCost {
  const unwrapped = unwrapTopology(topology)
  // a TF.js graph model's GraphDef
  if (Array.isArray(unwrapped.node)) return analyzeGraphDef(unwrapped.node as JsonNode[], inputShape)
  const layers = flattenLayers(unwrapped)
  const sequential = unwrapped.class_name === 'Sequential'
  const shapes = new Map<string, number[]>()
  const out: LayerCost[] = []
  let previous: number[] = inputShape
  for (const layer of layers) {
    const className = String(layer.class_name ?? '')
    const c = (isRecord(layer.config) ? layer.config : {}) as Json
    const name = String(layer.name ?? c.name ?? `layer_${out.length}`)
    if (className === 'InputLayer') {
      shapes.set(name, inputShape)
      previous = inputShape
      continue
    }
    let inputs: number[][]
    const inbound = sequential ? null : inboundNames(layer)
    if (inbound) inputs = inbound.map((n) => shapes.get(n) ?? previous)
    else inputs = [previous]
    let cost: { shape: number[]; params: number; work: number }
    if (className === 'Sequential' || className === 'Functional' || className === 'Model') {
      const inner = analyzeTopology(layer as Topology, inputs[0])
      out.push(...inner.layers)
      const last = inner.layers.at(-1)
      cost = { shape: last ? last.outputShape : inputs[0], params: 0, work: 0 }
    } else {
      cost = layerShape(className, c, inputs)
    }
    const shape = cost.shape.map((d) => (Number.isFinite(d) && d > 0 ? Math.round(d) : 1))
    shapes.set(name, shape)
    previous = shape
    if (className === 'Sequential' || className === 'Functional' || className === 'Model') continue
    out.push({
      name,
      className,
      outputShape: shape,
      outputElements: prod(shape),
      params: cost.params,
      workspaceElements: cost.work,
    })
  }
  return { inputShape, inputElements: prod(inputShape), layers: out, params: out.reduce((a, l) => a + l.params, 0) }
}

/** Parameters listed in a model.json's weights manifest (exact where the layer formulas are not). */
export function manifestParams(modelJson: Json): number | null {
  const manifest = modelJson.weightsManifest
  if (!Array.isArray(manifest)) return null
  let n = 0
  for (const group of manifest)
    for (const w of (isRecord(group) && Array.isArray(group.weights) ? group.weights : []) as Json[])
      if (Array.isArray(w.shape)) n += prod(w.shape as number[])
  return n
}

/**
 * Activation values per sample an inference pass holds at its peak: every intermediate of a shallow network,
 * but a deep one frees the outputs its later layers no longer need, so its peak follows its largest layers.
 */
function inferenceElements(cost: TopologyCost): number {
  let sum = 0
  let largest = 0
  let work = 0
  for (const l of cost.layers) {
    sum += l.outputElements
    largest = Math.max(largest, l.outputElements)
    work = Math.max(work, l.workspaceElements)
  }
  return cost.inputElements + Math.min(sum * INFER_FACTOR, largest * (cost.deepFactor ?? INFER_DEEP_FACTOR)) + work
}

/** Activation values per sample a training step holds (forward tape plus the gradients flowing back). */
function trainingElements(cost: TopologyCost): number {
  let sum = cost.inputElements
  let work = 0
  for (const l of cost.layers) {
    sum += l.outputElements
    work = Math.max(work, l.workspaceElements)
  }
  return sum * TRAIN_TAPE_FACTOR + 2 * work
}

const OPTIMIZER_SLOTS: Record<OptimizerName, number> = { adam: 2, rmsprop: 2, sgd: 0 }

function total(e: Omit<MemoryEstimate, 'totalBytes'>): MemoryEstimate {
  const sum = e.runtimeBytes + e.parameterBytes + e.gradientBytes + e.optimizerBytes + e.activationBytes + e.dataBytes
  return { ...e, totalBytes: Math.round(sum) }
}

/**
 * An inference process answering `rows` inputs with one model, loaded for the request (its cache then holds
 * the weights): all inputs are decoded and preprocessed up front, then run `passBatch` at a time.
 */
export function estimateInference(
  cost: TopologyCost,
  rows: number,
  params = cost.params,
  passBatch = rows,
  /** the process compiles the model into a graph first (its peak: GRAPH_COMPILE_WEIGHT_COPIES more) */
  compiled = false,
): MemoryEstimate {
  return total({
    runtimeBytes: RUNTIME_BYTES,
    parameterBytes: params * F32 * (LOAD_COPIES + (compiled ? GRAPH_COMPILE_WEIGHT_COPIES : 0)),
    gradientBytes: 0,
    optimizerBytes: 0,
    activationBytes: Math.round(Math.min(rows, passBatch) * inferenceElements(cost) * F32),
    dataBytes: rows * cost.inputElements * (F32 + 1),
  })
}

/**
 * An evaluation process (worker side): the model loaded, the whole labelled file held as stored (images one
 * byte per value, tabular four), and `passBatch` samples at a time preprocessed to float32 and run.
 */
export function estimateEvaluation(
  cost: TopologyCost,
  rows: number,
  sample: { elements: number; bytesPerValue: number },
  params = cost.params,
  passBatch = 256,
): MemoryEstimate {
  const batch = Math.min(rows, passBatch)
  return total({
    runtimeBytes: RUNTIME_BYTES,
    parameterBytes: params * F32 * LOAD_COPIES,
    gradientBytes: 0,
    optimizerBytes: 0,
    activationBytes: Math.round(batch * inferenceElements(cost) * F32),
    dataBytes: rows * sample.elements * sample.bytesPerValue + batch * cost.inputElements * F32,
  })
}

/** What one cached model accounts for in an inference process: its weights plus its largest pass. */
export function cachedModelBytes(cost: TopologyCost, batch: number, params = cost.params): number {
  const e = estimateInference(cost, batch, params)
  // once loaded, one copy of the weights stays
  return e.totalBytes - e.runtimeBytes - params * F32 * (LOAD_COPIES - 1)
}

/** What a training process holds for one job. */
export interface TrainingShape {
  /** the network trained: every layer (supervised, distillation student) or, for transfer, the head */
  trained: TopologyCost
  /** parameters of `trained` (manifest count when known) */
  trainedParams?: number
  batchSize: number
  optimizer?: OptimizerName
  /** training plus validation samples */
  rows: number
  /** bytes per stored sample: images 1 per value (uint8), tabular 4 */
  bytesPerValue: number
  /** a frozen network run in inference mode over every sample first (transfer backbone, distillation teacher) */
  frozen?: { cost: TopologyCost; params?: number; batch: number; outputsPerSample: number }
  /** validation and the final evaluation run the trained network in inference mode, this many at a time */
  evalBatch?: number
}

/** The training process of one job: runtime, data, weights, gradients, optimizer slots and the largest step. */
export function estimateTraining(s: TrainingShape): MemoryEstimate {
  const params = s.trainedParams ?? s.trained.params
  const slots = OPTIMIZER_SLOTS[s.optimizer ?? 'adam']
  const step = s.batchSize * trainingElements(s.trained) * F32 + s.batchSize * s.trained.inputElements * F32
  const evalBatch = Math.min(s.evalBatch ?? 256, Math.max(1, s.rows))
  const evaluation = evalBatch * inferenceElements(s.trained) * F32
  let frozenParams = 0
  let frozenPass = 0
  let cached = 0
  if (s.frozen) {
    frozenParams = (s.frozen.params ?? s.frozen.cost.params) * F32
    frozenPass = s.frozen.batch * inferenceElements(s.frozen.cost) * F32
    cached = s.rows * s.frozen.outputsPerSample * F32
  }
  return total({
    runtimeBytes: RUNTIME_BYTES,
    parameterBytes: params * F32 + frozenParams,
    gradientBytes: params * F32,
    optimizerBytes: params * F32 * slots,
    // the passes run one after another: the largest of them is what the process peaks at
    activationBytes: Math.round(Math.max(step, evaluation, frozenPass)),
    dataBytes: s.rows * s.trained.inputElements * s.bytesPerValue + cached,
  })
}

/** Layers of a preset as a Keras topology, mirroring architectures.ts (tested against the built models). */
export function presetTopology(id: ArchitectureId, inputShape: number[], numClasses: number): Topology {
  const layers: Json[] = []
  const add = (class_name: string, config: Json) => layers.push({ class_name, config })
  const dense = (name: string, units: number) => add('Dense', { name, units, use_bias: true })
  if (id === 'mlp-small' || id === 'mlp-large') {
    if (inputShape.length > 1) add('Flatten', { name: 'flatten' })
    const hidden = id === 'mlp-small' ? [128] : [800, 800]
    hidden.forEach((u, i) => {
      dense(`dense_${i + 1}`, u)
      add('Dropout', { name: `dropout_${i + 1}` })
    })
  } else {
    const blocks =
      id === 'cnn-small'
        ? [[16], [32]]
        : [
            [32, 32],
            [64, 64],
          ]
    blocks.forEach((filters, b) => {
      filters.forEach((f, i) => {
        add('Conv2D', { name: `block${b + 1}_conv${i + 1}`, filters: f, kernel_size: 3, padding: 'same' })
      })
      add('MaxPooling2D', { name: `block${b + 1}_pool`, pool_size: 2 })
      if (id === 'cnn-large') add('Dropout', { name: `block${b + 1}_dropout` })
    })
    add('Flatten', { name: 'flatten' })
    dense('dense_1', id === 'cnn-small' ? 64 : 256)
    add('Dropout', { name: 'dropout_1' })
  }
  dense('predictions', numClasses)
  return { class_name: 'Sequential', config: { layers } }
}

/** Largest height and width a preset builds its network for; larger images are scaled down to fit. */
export const PRESET_MAX_IMAGE_SIDE = 128

/** The input a preset is built for from the file's image shape: scaled down to fit (see fitShape). */
export function presetImageShape(imageShape: readonly number[]): [number, number, number] {
  const [h, w, c] = imageShape
  return fitShape([h, w, c], PRESET_MAX_IMAGE_SIDE)
}

/** A model as the estimator takes it: its topology, its input shape and (when known) its exact parameters. */
export interface ModelShape {
  topology: Topology
  inputShape: number[]
  /** from the weights manifest */
  params?: number | null
  /** transfer: the layer whose output is the feature vector */
  featureLayer?: string | null
}

/** A model directory (model.json + metadata.json) as the estimator takes it; reads JSON only. */
export async function readModelShape(dir: string): Promise<ModelShape> {
  const [modelJson, meta] = await Promise.all(
    ['model.json', 'metadata.json'].map(async (f) => JSON.parse(await readFile(join(dir, f), 'utf8')) as Json),
  )
  return {
    topology: unwrapTopology(modelJson.modelTopology),
    inputShape: meta.input_shape as number[],
    params: manifestParams(modelJson),
    featureLayer: (meta.feature_layer as string | null) ?? null,
  }
}

/** What a fine-tuning job will train on, as the API knows it before any file is loaded. */
export interface JobShape {
  method: 'transfer' | 'supervised' | 'distillation'
  /** the base model (transfer: the backbone), or a preset sized from the file */
  base: ModelShape | { preset: ArchitectureId }
  teacher?: ModelShape
  file: { kind: 'image' | 'tabular'; imageShape?: number[]; features?: number; rows: number; classes: number }
  validationRows?: number
  batchSize: number
  optimizer?: OptimizerName
  /** transfer head width (0: no hidden layer) */
  headUnits?: number
  /** transfer with unfrozen top blocks: the whole network is trained in its second phase */
  fineTuneWhole?: boolean
}

/** Inputs a preset is built for from the file's samples (images scaled down to fit, rows flat). */
export function presetInputShape(file: JobShape['file']): number[] {
  return file.kind === 'image' && file.imageShape ? presetImageShape(file.imageShape) : [file.features ?? 1]
}

/** The layers up to and including `featureLayer` (all when it is not found). */
function cutAt(cost: TopologyCost, featureLayer: string | null | undefined): TopologyCost {
  const i = featureLayer ? cost.layers.findIndex((l) => l.name === featureLayer) : -1
  if (i < 0) return cost
  const layers = cost.layers.slice(0, i + 1)
  return { ...cost, layers, params: layers.reduce((a, l) => a + l.params, 0) }
}

/**
 * Samples per inference-mode forward pass over a frozen network (feature caching, teacher outputs,
 * evaluations): 256 for small inputs, fewer for large ones, so a pass holds about 16 MB of float32 input
 * (MobileNetV2's 224x224x3: 27). The engine and the estimates use this one rule.
 */
export function forwardBatchSize(inputShape: readonly number[], max = 256): number {
  return Math.max(8, Math.min(max, Math.floor(4_194_304 / prod(inputShape.map((d) => Math.max(1, d))))))
}

/** The transfer head of transfer-model.ts: dense `hidden` -> dropout -> dense k. */
function headTopology(hidden: number, k: number): Topology {
  const layers: Json[] = []
  if (hidden > 0) {
    layers.push({ class_name: 'Dense', config: { name: 'head_dense', units: hidden } })
    layers.push({ class_name: 'Dropout', config: { name: 'head_dropout' } })
  }
  layers.push({ class_name: 'Dense', config: { name: 'head_predictions', units: k } })
  return { class_name: 'Sequential', config: { layers } }
}

/** The training process of a job, from the topology of its model(s) and the file's stats. */
export function estimateJob(job: JobShape): MemoryEstimate {
  const rows = job.file.rows + (job.validationRows ?? 0)
  const k = Math.max(1, job.file.classes)
  const bytesPerValue = job.file.kind === 'image' ? 1 : F32
  const common = { batchSize: job.batchSize, optimizer: job.optimizer, rows, bytesPerValue }
  const frozenOf = (m: ModelShape, cost: TopologyCost, outputsPerSample: number) => ({
    cost,
    params: m.params ?? undefined,
    batch: forwardBatchSize(m.inputShape),
    outputsPerSample,
  })
  const teacher = job.teacher
    ? frozenOf(job.teacher, analyzeTopology(job.teacher.topology, job.teacher.inputShape), k)
    : undefined
  if ('preset' in job.base) {
    const shape = presetInputShape(job.file)
    const trained = analyzeTopology(presetTopology(job.base.preset, shape, k), shape)
    return estimateTraining({ ...common, trained, frozen: teacher })
  }
  const base = job.base
  const whole = analyzeTopology(base.topology, base.inputShape)
  // images are loaded at the model's input size
  if (job.method !== 'transfer')
    return estimateTraining({ ...common, trained: whole, trainedParams: base.params ?? undefined, frozen: teacher })
  const backbone = cutAt(whole, base.featureLayer)
  const featureDim = backbone.layers.at(-1)?.outputElements ?? whole.inputElements
  const head = analyzeTopology(headTopology(job.headUnits ?? 128, k), [featureDim])
  // the head trains on the cached features (counted by `frozen`), not on stored samples
  const cached = estimateTraining({
    ...common,
    bytesPerValue: 0,
    trained: head,
    frozen: frozenOf(base, backbone, featureDim),
  })
  // the images themselves stay loaded while their features are computed
  const phase1 = total({ ...cached, dataBytes: cached.dataBytes + rows * whole.inputElements * bytesPerValue })
  if (!job.fineTuneWhole) return phase1
  const phase2 = estimateTraining({ ...common, trained: whole, trainedParams: base.params ?? undefined })
  return phase2.totalBytes > phase1.totalBytes ? phase2 : phase1
}

/** "1.5 GiB" / "300 MiB": figures in messages people read. */
export function formatBytes(n: number): string {
  const gib = n / 1024 ** 3
  if (gib >= 1) return `${gib.toFixed(gib >= 10 ? 0 : 1)} GiB`
  return `${Math.round(n / 1024 ** 2)} MiB`
}
