// A whole training step as one TensorFlow graph: forward pass, loss, gradients and the optimizer's update,
// run through tfjs-node's SavedModel session like the frozen forward passes (forward.ts). Eagerly, tfjs
// dispatches every op of a step on its own (a cnn-small step at batch 128 is ~200 kernel calls, each through
// the binding); as a graph, TensorFlow runs them in one call and swaps in its fused oneDNN kernels, as Keras'
// compiled `fit` does.
//
// The session holds no state: weights and optimizer slots are inputs, their new values outputs, written back
// into the model's variables after each step. So checkpoints, early stopping's snapshots, validation and the
// saved model see the same variables as on the eager path, and the optimizer's state has the names and order
// tfjs's own optimizers give it (`<variable>/m`, `<variable>/v`, `iter`): a checkpoint written here resumes
// eagerly (a wasm worker) and the other way round. Dropout masks are drawn from the job's generator in the
// same order and amounts as RefitDropout draws them eagerly, so both paths train on the same masks.
//
// Gradients are written by hand per op (TensorFlow's C API builds them, but tfjs-node does not expose it), so
// only a plain chain of the layers below is covered; anything else trains eagerly and the job's events say
// which layer and why. test/engine/train-step.test.ts checks loss and updated weights against the eager step.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { REFIT_DROPOUT } from '../dropout.js'
import type { OptimizerName } from '../protocol.js'
import type { Rng } from '../random.js'
import type { LayersModel, NamedTensor, Tensor, Tf, Variable } from '../tf.js'
import { isUncovered, planGraph } from './compile.js'
import { attr, GraphBuilder, type SignatureTensor } from './graph-def.js'

type Layer = LayersModel['layers'][number]
type Act = 'linear' | 'relu' | 'relu6'

/** One layer of the chain, as the step computes it. */
type ChainOp =
  | { kind: 'conv' | 'dense'; layer: Layer; act: Act; kernel: Variable; bias: Variable | null }
  | { kind: 'maxpool' | 'avgpool'; layer: Layer; ksize: number[]; strides: number[]; padding: string }
  | { kind: 'reshape'; layer: Layer; tail: number[] }
  | { kind: 'dropout'; layer: Layer; rate: number; shape: number[] }
  | { kind: 'act'; layer: Layer; act: Act }
  | { kind: 'identity'; layer: Layer }

/** Why a model trains eagerly: the layer (if one is the reason) and the reason. */
export interface EagerReason {
  layer: string | null
  reason: string
}

/** What the step trains and how. */
export interface TrainStepOptions {
  model: LayersModel
  /** the variables the phase trains, in the phase's order (the optimizer's slots follow it) */
  variables: Variable[]
  optimizer: OptimizerName | undefined
  learningRate: number
  numClasses: number
  /** distillation: the loss mixes the teacher's soft targets in */
  soft?: { temperature: number; alpha: number } | null
}

type Internal = any

function activationOf(config: Record<string, any>): string {
  const a = config.activation
  if (a == null) return 'linear'
  return typeof a === 'string' ? a : String(a.className ?? a.class_name ?? a)
}

function pair(v: number | number[] | undefined, fallback: number): [number, number] {
  if (v == null) return [fallback, fallback]
  return Array.isArray(v) ? [v[0], v[1] ?? v[0]] : [v, v]
}

const TRAINABLE_ACTS: readonly string[] = ['linear', 'relu', 'relu6']

/**
 * The model as a chain of covered ops, its last layer a softmax Dense (trained on its logits), or why not.
 * Checked without reading a weight.
 */
export function planTrainChain(model: LayersModel): { ops: ChainOp[]; inputShape: number[] } | EagerReason {
  const plan = planGraph(model)
  if (isUncovered(plan)) return { layer: plan.layer, reason: plan.reason }
  const ops: ChainOp[] = []
  let previous = plan.inputKey
  for (const [i, step] of plan.steps.entries()) {
    const { layer, call } = step
    const refuse = (reason: string): EagerReason => ({ layer: layer.name, reason: `${call.className}: ${reason}` })
    if (step.inputs.length !== 1 || step.inputs[0] !== previous)
      return refuse('the model is not a plain chain of layers (branches train eagerly)')
    previous = step.key
    const last = i === plan.steps.length - 1
    const c = call.config
    const act = activationOf(c)
    switch (call.className) {
      case 'Conv2D':
      case 'Dense': {
        if (last ? act !== 'softmax' : !TRAINABLE_ACTS.includes(act))
          return refuse(last ? 'the output layer is not a softmax' : `activation "${act}"`)
        if (call.className === 'Conv2D') {
          if (pair(c.dilationRate, 1).some((d) => d !== 1)) return refuse('dilated convolution')
          if ((c.groups ?? 1) !== 1) return refuse('grouped convolution')
        }
        const [kernel, bias] = layer.weights.map((w: Internal) => w.read() as Variable)
        ops.push({
          kind: call.className === 'Conv2D' ? 'conv' : 'dense',
          layer,
          act: last ? 'linear' : (act as Act),
          kernel,
          bias: c.useBias === false ? null : (bias ?? null),
        })
        continue
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const [ph, pw] = pair(c.poolSize, 2)
        const [sh, sw] = pair(c.strides ?? c.poolSize, 2)
        ops.push({
          kind: call.className === 'MaxPooling2D' ? 'maxpool' : 'avgpool',
          layer,
          ksize: [1, ph, pw, 1],
          strides: [1, sh, sw, 1],
          padding: String(c.padding).toUpperCase(),
        })
        break
      }
      case 'Flatten':
      case 'Reshape':
        ops.push({ kind: 'reshape', layer, tail: call.outputShape.slice(1) as number[] })
        break
      case 'Dropout': {
        // RefitDropout (saved as Dropout) draws masks while training; a plain Dropout is off, as eagerly
        const refit = (layer.constructor as { className?: string }).className === REFIT_DROPOUT
        const rate = Number(c.rate)
        if (refit && rate > 0 && rate < 1) {
          if (c.noiseShape) return refuse('noise shape')
          ops.push({ kind: 'dropout', layer, rate, shape: call.outputShape.slice(1) as number[] })
        } else ops.push({ kind: 'identity', layer })
        break
      }
      case 'ReLU':
        if (c.maxValue != null && c.maxValue !== 6) return refuse(`maxValue ${c.maxValue}`)
        if (c.negativeSlope) return refuse('negative slope')
        ops.push({ kind: 'act', layer, act: c.maxValue === 6 ? 'relu6' : 'relu' })
        break
      case 'Activation':
        if (!TRAINABLE_ACTS.includes(act)) return refuse(`activation "${act}"`)
        ops.push({ kind: 'act', layer, act: act as Act })
        break
      default:
        // the other dropout and noise layers are off while training (inference-mode layers, as eagerly)
        if (layer.weights.length > 0 || !/Dropout|Noise/.test(call.className))
          return refuse('trains eagerly (no hand-written gradient)')
        ops.push({ kind: 'identity', layer })
    }
    if (last) return refuse('the output layer is not a softmax Dense')
  }
  return { ops, inputShape: plan.inputShape }
}

/** The optimizer slots per trained variable, as tfjs names them (`<variable>/<suffix>`). */
const SLOTS: Record<OptimizerName, string[]> = { adam: ['m', 'v'], sgd: [], rmsprop: ['rms', 'momentum'] }
const ADAM = { beta1: 0.9, beta2: 0.999 }
const RMSPROP = { decay: 0.9, momentum: 0 }

interface Emitted {
  savedModel: Uint8Array
  dropouts: Extract<ChainOp, { kind: 'dropout' }>[]
  /** every weight fed to the step (trained or not), by input key */
  weights: { key: string; variable: Variable }[]
}

/**
 * Emits the step's graph; `epsilon` is the backend's (tfjs's optimizers use it as their default). In order:
 * the forward pass, the loss and its gradient, the backward pass layer by layer, the optimizer's update.
 */
function emitTrainGraph(
  opts: TrainStepOptions,
  ops: ChainOp[],
  inputShape: number[],
  epsilon: number,
): Emitted | EagerReason {
  const s = new StepGraph()
  const k = opts.numClasses
  const x = s.input('x', [-1, ...inputShape])
  const target = s.input('target', [-1, k])
  const teacher = opts.soft ? s.input('teacher', [-1, k]) : null
  const done = emitForward(s, ops, x)
  const logits = done.length ? done[done.length - 1].y : x
  const { dLogits, stats } = emitLoss(s, opts.soft ?? null, logits, target, teacher)
  const grads = emitBackward(s, done, opts.variables, dLogits)
  if (!(grads instanceof Map)) return grads
  const outputs = emitOptimizer(s, opts, grads, stats, epsilon)
  if (!Array.isArray(outputs)) return outputs
  return { savedModel: s.g.savedModelOf(s.inputs, outputs), dropouts: s.dropouts, weights: s.weights }
}

/** The step's graph under construction: its nodes, its inputs (the signature's) and what they feed. */
class StepGraph {
  readonly g = new GraphBuilder()
  readonly F = { T: attr.float() }
  readonly inputs: SignatureTensor[] = []
  readonly weights: Emitted['weights'] = []
  readonly dropouts: Emitted['dropouts'] = []

  input(key: string, dims: number[]): string {
    const name = this.g.placeholder(key, dims)
    this.inputs.push({ key, name, dims })
    return name
  }

  weightInput(v: Variable): string {
    const key = `w${this.weights.length}`
    this.weights.push({ key, variable: v })
    return this.input(key, [...v.shape])
  }

  scalar(hint: string, v: number): string {
    return this.g.constFloat(hint, Float32Array.of(v), [])
  }

  ints(hint: string, v: number[]): string {
    return this.g.constInt(hint, v, [v.length])
  }

  shape(x: string): string {
    return this.g.node(`${x}/Shape`, 'Shape', [x], { ...this.F, out_type: attr.int32() })
  }
}

/** One op of the forward pass and what its gradient needs: its input, its output and the inputs it took. */
interface Done {
  op: ChainOp
  x: string
  y: string
  kernel?: string
  bias?: string
  mask?: string
}

/** The forward pass from `x`, op by op; the last op's output is the logits. */
function emitForward(s: StepGraph, ops: ChainOp[], x: string): Done[] {
  const { g, F } = s
  const done: Done[] = []
  let h = x
  const activate = (name: string, act: Act, v: string) =>
    act === 'linear'
      ? v
      : g.node(`${name}/${act === 'relu' ? 'Relu' : 'Relu6'}`, act === 'relu' ? 'Relu' : 'Relu6', [v], F)
  for (const op of ops) {
    const name = op.layer.name
    const d: Done = { op, x: h, y: h }
    if (op.kind === 'conv' || op.kind === 'dense') {
      d.kernel = s.weightInput(op.kernel)
      let z =
        op.kind === 'conv'
          ? g.node(`${name}/Conv2D`, 'Conv2D', [h, d.kernel], convAttrs(op.layer))
          : g.node(`${name}/MatMul`, 'MatMul', [h, d.kernel], {
              ...F,
              transpose_a: attr.b(false),
              transpose_b: attr.b(false),
            })
      if (op.bias) {
        d.bias = s.weightInput(op.bias)
        z = g.node(`${name}/BiasAdd`, 'BiasAdd', [z, d.bias], { ...F, data_format: attr.s('NHWC') })
      }
      d.y = activate(name, op.act, z)
    } else if (op.kind === 'maxpool' || op.kind === 'avgpool') {
      d.y = g.node(`${name}/pool`, op.kind === 'maxpool' ? 'MaxPool' : 'AvgPool', [h], poolAttrs(op))
    } else if (op.kind === 'reshape') {
      d.y = g.node(`${name}/Reshape`, 'Reshape', [h, s.ints(`${name}/shape`, [-1, ...op.tail])], {
        ...F,
        Tshape: attr.int32(),
      })
    } else if (op.kind === 'dropout') {
      d.mask = s.input(`mask${s.dropouts.length}`, [-1, ...op.shape])
      s.dropouts.push(op)
      d.y = g.node(`${name}/mul`, 'Mul', [h, d.mask], F)
    } else if (op.kind === 'act') {
      d.y = activate(name, op.act, h)
    }
    done.push(d)
    h = d.y
  }
  return done
}

/**
 * The loss (means over the batch, as tf.losses.softmaxCrossEntropy and distillationLoss compute them), its
 * gradient with respect to the logits, and `stats`, the [loss, correct] the step returns.
 */
function emitLoss(
  s: StepGraph,
  soft: TrainStepOptions['soft'],
  logits: string,
  target: string,
  teacher: string | null,
): { dLogits: string; stats: string } {
  const { g, F } = s
  const ce = g.node('loss/xent', 'SoftmaxCrossEntropyWithLogits', [logits, target], F)
  const axis0 = s.ints('loss/axis0', [0])
  const axis1 = s.ints('loss/axis1', [1])
  const reduce = { ...F, Tidx: attr.int32(), keep_dims: attr.b(false) }
  const mean = (v: string) => g.node(`${v}/mean`, 'Mean', [v, axis0], reduce)
  const invBatch = g.node(
    'loss/inv_batch',
    'Reciprocal',
    [g.node('loss/batch', 'Sum', [g.node('loss/ones', 'OnesLike', [ce], F), axis0], reduce)],
    F,
  )
  let loss = mean(ce)
  let dLogits = `${ce}:1`
  if (teacher && soft) {
    const { temperature: t, alpha } = soft
    const softXent = g.node(
      'loss/soft_xent',
      'SoftmaxCrossEntropyWithLogits',
      [g.node('loss/logits_t', 'Mul', [logits, s.scalar('loss/inv_t', 1 / t)], F), teacher],
      F,
    )
    // KL(teacher || student_T) = cross-entropy - the teacher's entropy
    const logTeacher = g.node(
      'loss/log_teacher',
      'Log',
      [g.node('loss/clip', 'Maximum', [teacher, s.scalar('loss/tiny', 1e-30)], F)],
      F,
    )
    const entropy = g.node(
      'loss/neg_entropy',
      'Sum',
      [g.node('loss/t_log_t', 'Mul', [teacher, logTeacher], F), axis1],
      reduce,
    )
    const kl = g.node('loss/kl', 'AddV2', [softXent, entropy], F)
    loss = g.node(
      'loss/total',
      'AddV2',
      [
        g.node('loss/soft_part', 'Mul', [mean(kl), s.scalar('loss/a_t2', alpha * t * t)], F),
        g.node('loss/hard_part', 'Mul', [loss, s.scalar('loss/1_a', 1 - alpha)], F),
      ],
      F,
    )
    // d/dz of alpha T^2 KL(z/T) is alpha T (softmax(z/T) - teacher)
    dLogits = g.node(
      'loss/d_mix',
      'AddV2',
      [
        g.node('loss/d_soft', 'Mul', [`${softXent}:1`, s.scalar('loss/a_t', alpha * t)], F),
        g.node('loss/d_hard', 'Mul', [dLogits, s.scalar('loss/1_a2', 1 - alpha)], F),
      ],
      F,
    )
  }
  dLogits = g.node('loss/d_logits', 'Mul', [dLogits, invBatch], F)
  const argmax = (v: string) =>
    g.node(`${v}/ArgMax`, 'ArgMax', [v, g.constInt(`${v}/axis`, [1], [])], {
      ...F,
      Tidx: attr.int32(),
      output_type: attr.int32(),
    })
  const hits = g.node(
    'metrics/hits',
    'Cast',
    [g.node('metrics/equal', 'Equal', [argmax(logits), argmax(target)], { T: attr.int32() })],
    { SrcT: attr.bool(), DstT: attr.float() },
  )
  const correct = g.node('metrics/correct', 'Sum', [hits, axis0], reduce)
  const stats = g.node('stats', 'Pack', [loss, correct], { ...F, N: attr.int(2), axis: attr.int(0) })
  return { dLogits, stats }
}

/** The trained variables' gradients, from the logits' down to the lowest layer that trains. */
function emitBackward(
  s: StepGraph,
  done: Done[],
  variables: Variable[],
  dLogits: string,
): Map<Variable, string> | EagerReason {
  const trained = new Set(variables)
  const lowest = done.findIndex((d) =>
    d.op.kind === 'conv' || d.op.kind === 'dense'
      ? trained.has(d.op.kernel) || (d.op.bias !== null && trained.has(d.op.bias))
      : false,
  )
  if (lowest < 0) return { layer: null, reason: 'no trained variable is a Conv2D or Dense weight of the chain' }
  const b: Backward = { trained, grads: new Map() }
  let dy = dLogits
  for (let i = done.length - 1; i >= lowest; i--) dy = emitGradient(s, b, done[i], dy, i > lowest)
  return b.grads
}

/** The backward pass's state: which variables train, and the gradients emitted for them so far. */
interface Backward {
  trained: Set<Variable>
  grads: Map<Variable, string>
}

/**
 * One op's backward step from `dy`, its output's gradient: adds its trained weights' gradients to `b.grads` and
 * returns its input's gradient (a layer with weights computes it only when `needDx`: a lower layer trains).
 */
function emitGradient(s: StepGraph, b: Backward, d: Done, dy: string, needDx: boolean): string {
  const { g, F } = s
  const op = d.op
  const name = op.layer.name
  switch (op.kind) {
    case 'conv':
    case 'dense':
      return emitWeightGradients(s, b, d, op, dy, needDx)
    case 'maxpool':
      return g.node(`${name}/MaxPoolGrad`, 'MaxPoolGrad', [d.x, d.y, dy], poolAttrs(op))
    case 'avgpool':
      return g.node(`${name}/AvgPoolGrad`, 'AvgPoolGrad', [s.shape(d.x), dy], poolAttrs(op))
    case 'reshape':
      return g.node(`${name}/dReshape`, 'Reshape', [dy, s.shape(d.x)], { ...F, Tshape: attr.int32() })
    case 'dropout':
      return g.node(`${name}/dMask`, 'Mul', [dy, d.mask!], F)
    case 'act':
      return actGrad(g, name, op.act, dy, d.y)
    case 'identity':
      return dy
  }
}

/** A Conv2D or Dense layer's backward step: through its activation, then its bias, kernel and input. */
function emitWeightGradients(
  s: StepGraph,
  { trained, grads }: Backward,
  d: Done,
  op: Extract<ChainOp, { kind: 'conv' | 'dense' }>,
  dy: string,
  needDx: boolean,
): string {
  const { g, F } = s
  const name = op.layer.name
  const dz = actGrad(g, name, op.act, dy, d.y)
  if (op.bias && trained.has(op.bias))
    grads.set(op.bias, g.node(`${name}/BiasAddGrad`, 'BiasAddGrad', [dz], { ...F, data_format: attr.s('NHWC') }))
  if (op.kind === 'conv') {
    if (trained.has(op.kernel))
      grads.set(
        op.kernel,
        g.node(
          `${name}/Conv2DBackpropFilter`,
          'Conv2DBackpropFilter',
          [d.x, s.ints(`${name}/kernel_shape`, [...op.kernel.shape]), dz],
          convAttrs(op.layer),
        ),
      )
    if (!needDx) return dy
    return g.node(
      `${name}/Conv2DBackpropInput`,
      'Conv2DBackpropInput',
      [s.shape(d.x), d.kernel!, dz],
      convAttrs(op.layer),
    )
  }
  if (trained.has(op.kernel))
    grads.set(
      op.kernel,
      g.node(`${name}/dKernel`, 'MatMul', [d.x, dz], { ...F, transpose_a: attr.b(true), transpose_b: attr.b(false) }),
    )
  if (!needDx) return dy
  return g.node(`${name}/dInput`, 'MatMul', [dz, d.kernel!], {
    ...F,
    transpose_a: attr.b(false),
    transpose_b: attr.b(true),
  })
}

/**
 * The optimizer's update, op for op as tfjs's optimizers compute it (same constants, same order): the step's
 * outputs, `stats` first, then each trained variable's new value and new slots.
 */
function emitOptimizer(
  s: StepGraph,
  opts: TrainStepOptions,
  grads: Map<Variable, string>,
  stats: string,
  epsilon: number,
): SignatureTensor[] | EagerReason {
  const { g, F } = s
  const outputs: SignatureTensor[] = [{ key: 'stats', name: stats, dims: [2] }]
  const output = (key: string, v: string, dims: number[]) =>
    outputs.push({ key, name: g.node(key, 'Identity', [v], F), dims })
  const name = opts.optimizer ?? 'adam'
  const lr = opts.learningRate
  const c = (hint: string, v: number) => s.scalar(`opt/${hint}`, v)
  const bias1 = name === 'adam' ? s.input('one_minus_acc_beta1', []) : null
  const bias2 = name === 'adam' ? s.input('one_minus_acc_beta2', []) : null
  for (const [i, v] of opts.variables.entries()) {
    const weight = s.weights.find((e) => e.variable === v)
    const grad = grads.get(v)
    if (!weight || !grad) return { layer: null, reason: 'a trained variable is not a weight of the chain' }
    const value = weight.key
    const dims = [...v.shape]
    const slot = (suffix: string) => s.input(`s${i}_${suffix}`, dims)
    const mul = (a: string, b: string) => g.node(`opt/${i}/mul`, 'Mul', [a, b], F)
    const add = (a: string, b: string) => g.node(`opt/${i}/add`, 'AddV2', [a, b], F)
    const div = (a: string, b: string) => g.node(`opt/${i}/div`, 'RealDiv', [a, b], F)
    const square = (a: string) => g.node(`opt/${i}/square`, 'Square', [a], F)
    const sqrt = (a: string) => g.node(`opt/${i}/sqrt`, 'Sqrt', [a], F)
    let next: string
    if (name === 'adam') {
      const m = add(mul(slot('m'), c('beta1', ADAM.beta1)), mul(grad, c('1-beta1', 1 - ADAM.beta1)))
      const sq = add(mul(slot('v'), c('beta2', ADAM.beta2)), mul(square(grad), c('1-beta2', 1 - ADAM.beta2)))
      const step = div(div(m, bias1!), add(sqrt(div(sq, bias2!)), c('epsilon', epsilon)))
      next = add(mul(step, c('-lr', -lr)), value)
      output(`n${i}_m`, m, dims)
      output(`n${i}_v`, sq, dims)
    } else if (name === 'rmsprop') {
      const ms = add(mul(slot('rms'), c('decay', RMSPROP.decay)), mul(square(grad), c('1-decay', 1 - RMSPROP.decay)))
      const mom = add(
        mul(slot('momentum'), c('momentum', RMSPROP.momentum)),
        div(mul(grad, c('lr', lr)), sqrt(add(ms, c('epsilon', epsilon)))),
      )
      next = g.node(`opt/${i}/sub`, 'Sub', [value, mom], F)
      output(`n${i}_rms`, ms, dims)
      output(`n${i}_momentum`, mom, dims)
    } else {
      next = add(mul(c('-lr', -lr), grad), value)
    }
    output(`n${i}`, next, dims)
  }
  return outputs
}

function convAttrs(layer: Layer) {
  const c = layer.getConfig() as Record<string, any>
  const [sh, sw] = pair(c.strides, 1)
  return {
    T: attr.float(),
    strides: attr.ints([1, sh, sw, 1]),
    dilations: attr.ints([1, 1, 1, 1]),
    padding: attr.s(String(c.padding).toUpperCase()),
    data_format: attr.s('NHWC'),
  }
}

function poolAttrs(op: { ksize: number[]; strides: number[]; padding: string }) {
  return {
    T: attr.float(),
    ksize: attr.ints(op.ksize),
    strides: attr.ints(op.strides),
    padding: attr.s(op.padding),
    data_format: attr.s('NHWC'),
  }
}

/** dy through an activation, from its output (TensorFlow's own ReluGrad / Relu6Grad take the output too). */
function actGrad(g: GraphBuilder, name: string, act: Act, dy: string, y: string): string {
  if (act === 'linear') return dy
  return act === 'relu'
    ? g.node(`${name}/ReluGrad`, 'ReluGrad', [dy, y], { T: attr.float() })
    : g.node(`${name}/Relu6Grad`, 'Relu6Grad', [dy, y], { T: attr.float() })
}

/**
 * A compiled training step. `run` trains one batch (updating the model's variables) and returns [loss,
 * correct]; it is also the phase's optimizer for checkpoints (`getWeights` / `setWeights` in tfjs's format).
 */
export class GraphTrainStep {
  private slots: Tensor[][]
  private iterations = 0
  // tfjs keeps beta^t in float32 variables: the same rounding here
  private accBeta1 = Math.fround(ADAM.beta1)
  private accBeta2 = Math.fround(ADAM.beta2)

  constructor(
    private readonly tf: Tf,
    private readonly session: Internal,
    private readonly emitted: Emitted,
    private readonly opts: TrainStepOptions,
    /** ms spent compiling and loading the session */
    readonly compileMs: number,
  ) {
    const names = SLOTS[opts.optimizer ?? 'adam']
    this.slots = opts.variables.map((v) => names.map(() => tf.zerosLike(v)))
  }

  /** One batch: `target` is the one-hot labels [rows, k], `teacher` the teacher's probabilities at T. */
  run(x: Tensor, target: Tensor, teacher: Tensor | null, rng: Rng): Tensor {
    const { tf, emitted, opts } = this
    const rows = x.shape[0] as number
    const feed: Record<string, Tensor> = { x, target }
    if (teacher) feed.teacher = teacher
    const made: Tensor[] = []
    // masks in forward order, value for value as RefitDropout draws them
    for (const [i, d] of emitted.dropouts.entries()) {
      const keep = 1 - d.rate
      const scale = 1 / keep
      const n = rows * d.shape.reduce((a, b) => a * b, 1)
      const mask = new Float32Array(n)
      for (let j = 0; j < n; j++) mask[j] = rng.next() < keep ? scale : 0
      const t = tf.tensor(mask, [rows, ...d.shape], 'float32')
      made.push(t)
      feed[`mask${i}`] = t
    }
    for (const w of emitted.weights) feed[w.key] = w.variable
    const slotNames = SLOTS[opts.optimizer ?? 'adam']
    opts.variables.forEach((_, i) => {
      slotNames.forEach((s, j) => {
        feed[`s${i}_${s}`] = this.slots[i][j]
      })
    })
    if ((opts.optimizer ?? 'adam') === 'adam') {
      const b1 = tf.scalar(1 - this.accBeta1)
      const b2 = tf.scalar(1 - this.accBeta2)
      made.push(b1, b2)
      feed.one_minus_acc_beta1 = b1
      feed.one_minus_acc_beta2 = b2
    }
    let out: Record<string, Tensor>
    try {
      out = this.session.predict(feed) as Record<string, Tensor>
    } finally {
      tf.dispose(made)
    }
    opts.variables.forEach((v, i) => {
      v.assign(out[`n${i}`])
      out[`n${i}`].dispose()
      slotNames.forEach((s, j) => {
        this.slots[i][j].dispose()
        this.slots[i][j] = out[`n${i}_${s}`]
      })
    })
    this.accBeta1 = Math.fround(this.accBeta1 * Math.fround(ADAM.beta1))
    this.accBeta2 = Math.fround(this.accBeta2 * Math.fround(ADAM.beta2))
    this.iterations++
    return out.stats
  }

  /** The optimizer's state as tfjs's optimizer of the same name gives it (live slots and a new `iter`). */
  async getWeights(): Promise<NamedTensor[]> {
    const names = SLOTS[this.opts.optimizer ?? 'adam']
    const out: NamedTensor[] = [{ name: 'iter', tensor: this.tf.scalar(this.iterations, 'int32') }]
    names.forEach((s, j) => {
      this.opts.variables.forEach((v, i) => {
        out.push({ name: `${v.name}/${s}`, tensor: this.slots[i][j] })
      })
    })
    return out
  }

  /** Restores state written by `getWeights` or by tfjs's optimizer of the same name (same variables, same order). */
  async setWeights(weights: NamedTensor[]): Promise<void> {
    const { tf } = this
    const iter = weights.find((w) => w.name === 'iter')
    if (iter) this.iterations = (await iter.tensor.data())[0]
    const rest = weights.filter((w) => w.name !== 'iter')
    const names = SLOTS[this.opts.optimizer ?? 'adam']
    const n = this.opts.variables.length
    if (rest.length !== names.length * n)
      throw new Error(`optimizer state has ${rest.length} slots, this phase needs ${names.length * n}`)
    names.forEach((_, j) => {
      for (let i = 0; i < n; i++) {
        this.slots[i][j].dispose()
        this.slots[i][j] = tf.clone(rest[j * n + i].tensor)
      }
    })
    // as tfjs's Adam.setWeights: beta^(iterations + 1)
    this.accBeta1 = Math.fround(ADAM.beta1 ** (this.iterations + 1))
    this.accBeta2 = Math.fround(ADAM.beta2 ** (this.iterations + 1))
  }

  dispose(): void {
    for (const s of this.slots) this.tf.dispose(s)
    this.slots = []
    this.session.dispose()
  }
}

/** The step compiled for `opts`, or why the phase trains eagerly. */
export async function compileTrainStep(tf: Tf, opts: TrainStepOptions): Promise<GraphTrainStep | EagerReason> {
  const t0 = performance.now()
  const chain = planTrainChain(opts.model)
  if ('reason' in chain) return chain
  const emitted = emitTrainGraph(opts, chain.ops, chain.inputShape, (tf as Internal).backend().epsilon())
  if ('reason' in emitted) return emitted
  // a few kB without weights, compiled per phase in well under a second: a private directory, not the cache
  const dir = await mkdtemp(path.join(tmpdir(), 'refit-train-step-'))
  try {
    await mkdir(path.join(dir, 'variables'))
    await writeFile(path.join(dir, 'saved_model.pb'), emitted.savedModel)
    const session = await (tf as Internal).node.loadSavedModel(dir, ['serve'], 'serving_default')
    return new GraphTrainStep(tf, session, emitted, opts, Math.round(performance.now() - t0))
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}
