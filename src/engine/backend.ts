// Backend choice: tfjs-node ('tensorflow'), wasm (with our two kernel fixes) or plain cpu, each proven by a
// self-test against the cpu backend before a job trusts it. tfjs-node's addon is built against a newer
// libtensorflow than it targets, and wasm lacks kernels, so "it registered" is not proof that it computes.
import { createRequire } from 'node:module'
import path from 'node:path'
import { useFastLayers } from './fast-layers.js'
import type { BackendName, MethodSpec } from './protocol.js'
import { mulberry32 } from './random.js'
import type { Tf } from './tf.js'
import { registerWasmConv2DBackpropFilter, registerWasmMaxPoolGradFix } from './wasm-kernels.js'

const require = createRequire(import.meta.url)

/** Result of the self-test: largest absolute differences against the cpu backend, and its duration. */
export interface SelfTestResult {
  maxForwardDiff: number
  maxGradDiff: number
  ms: number
}

/** A ready backend: the tfjs namespace to use, which backend is active, and its self-test figures. */
export interface SelectedBackend {
  tf: Tf
  backend: BackendName
  selfTest: SelfTestResult
  /** backends tried before this one and why each was rejected */
  rejected: { backend: BackendName; reason: string }[]
}

/** What a backend can do; callers check this instead of testing backend names. */
export interface BackendCapabilities {
  /** gradients through depthwise convolutions (fine-tuning MobileNet-like layers) */
  depthwiseConvGradients: boolean
}

/** Self-test tolerances (STACK.md: tensorflow within 1e-7/5e-6, fixed wasm within 2e-5). */
export const SELF_TEST_TOLERANCE = { forward: 1e-4, grad: 5e-5 } as const

const FALLBACK_ORDER: BackendName[] = ['tensorflow', 'wasm', 'cpu']

export function backendCapabilities(backend: BackendName): BackendCapabilities {
  return { depthwiseConvGradients: backend !== 'wasm' }
}

const DEPTHWISE_CLASSES = new Set(['DepthwiseConv2D', 'SeparableConv2D'])

/** Layer (class, name) pairs of a model.json topology, nested models included. */
function topologyLayers(topology: unknown): { className: string; name: string }[] {
  const out: { className: string; name: string }[] = []
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n)
    } else if (node && typeof node === 'object') {
      const o = node as Record<string, any>
      if (typeof o.class_name === 'string' && o.config && typeof o.config.name === 'string')
        out.push({ className: o.class_name, name: o.config.name })
      for (const v of Object.values(o)) walk(v)
    }
  }
  walk(topology)
  return out
}

/**
 * Null when `backend` can run `method` on the model with this model.json topology, else the reason it cannot
 * (callers raise `backend_cannot_train`). A frozen-backbone transfer only runs the backbone forward, so it
 * is fine anywhere; supervised, distillation (the student) and transfer with unfrozen blocks need gradients
 * through the trained layers: `trainedLayers` narrows the check to those when the caller knows them.
 */
export function checkCapabilities(
  backend: BackendName,
  modelTopologyJson: unknown,
  method: MethodSpec,
  trainedLayers?: string[],
): string | null {
  const caps = backendCapabilities(backend)
  const trainsBackbone =
    method.type === 'supervised' ||
    method.type === 'distillation' ||
    (method.type === 'transfer' && (method.unfreeze_top_blocks ?? 0) > 0)
  if (!trainsBackbone || caps.depthwiseConvGradients) return null
  const only = trainedLayers ? new Set(trainedLayers) : null
  const depthwise = topologyLayers(modelTopologyJson).filter(
    (l) => DEPTHWISE_CLASSES.has(l.className) && (!only || only.has(l.name)),
  )
  if (depthwise.length === 0) return null
  const what = method.type === 'transfer' ? 'fine-tune the unfrozen blocks of' : `train (${method.type})`
  return `the ${backend} backend has no gradients for depthwise convolutions, so it cannot ${what} this model (${depthwise.length} depthwise layers, e.g. ${depthwise[0].name}); use a frozen-backbone transfer or a worker on the tensorflow or cpu backend`
}

function tfjsRequire(): NodeRequire {
  return createRequire(require.resolve('@tensorflow/tfjs/package.json'))
}

/** @tensorflow/tfjs, loaded once through CommonJS so that it shares tfjs-core with tfjs-node. */
function loadTfjs(): Tf {
  return require('@tensorflow/tfjs') as Tf
}

function loadTfNode(): Tf {
  const tfNode = require('@tensorflow/tfjs-node') as Tf
  const tf = loadTfjs()
  const nodeRequire = createRequire(require.resolve('@tensorflow/tfjs-node/package.json'))
  const coreViaNode = nodeRequire.resolve('@tensorflow/tfjs-core')
  const coreViaTfjs = tfjsRequire().resolve('@tensorflow/tfjs-core')
  // Two tfjs-core copies would mean two engines and two Tensor classes: models built with one
  // namespace would silently run on the other's backend registry.
  if (coreViaNode !== coreViaTfjs || tfNode.Tensor !== tf.Tensor || tfNode.engine() !== tf.engine()) {
    throw new Error(
      `@tensorflow/tfjs-node and @tensorflow/tfjs resolve different tfjs-core (${coreViaNode} vs ${coreViaTfjs})`,
    )
  }
  return tfNode
}

let wasmPrepared = false
function loadTfWasm(): Tf {
  const tf = loadTfjs()
  if (!wasmPrepared) {
    const wasm = require('@tensorflow/tfjs-backend-wasm') as { setWasmPaths: (p: string) => void }
    wasm.setWasmPaths(`${path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'))}/dist/`)
    registerWasmConv2DBackpropFilter(tf)
    registerWasmMaxPoolGradFix(tf)
    wasmPrepared = true
  }
  return tf
}

function loadFor(backend: BackendName): Tf {
  if (backend === 'tensorflow') return loadTfNode()
  if (backend === 'wasm') return loadTfWasm()
  return loadTfjs()
}

interface SelfTestInputs {
  x: Float32Array
  w1: Float32Array
  b1: Float32Array
  w2: Float32Array
  wd: Float32Array
  dw: Float32Array
  labels: Int32Array
}

const X_SHAPE: [number, number, number, number] = [2, 10, 10, 3]

function selfTestInputs(): SelfTestInputs {
  const rng = mulberry32(1234)
  const fill = (n: number, scale: number) => Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale)
  return {
    x: fill(2 * 10 * 10 * 3, 1),
    w1: fill(3 * 3 * 3 * 4, 0.4),
    b1: fill(4, 0.2),
    w2: fill(3 * 3 * 4 * 4, 0.3),
    wd: fill(16 * 3, 0.5),
    dw: fill(3 * 3 * 3 * 1, 0.4),
    labels: Int32Array.from([0, 2]),
  }
}

/**
 * Conv (valid, no activation so MaxPool sees negative windows) -> MaxPool -> strided 'same' conv (relu)
 * -> dense -> softmax cross-entropy; gradients w.r.t. input, both conv kernels, bias and dense weights.
 * Plus, where supported, a depthwise conv and its gradients.
 */
async function runSelfTestGraph(
  tf: Tf,
  inp: SelfTestInputs,
  depthwise: boolean,
): Promise<{ fwd: Float32Array[]; grads: Float32Array[] }> {
  const x = tf.tensor4d(inp.x, X_SHAPE)
  const w1 = tf.tensor4d(inp.w1, [3, 3, 3, 4])
  const b1 = tf.tensor1d(inp.b1)
  const w2 = tf.tensor4d(inp.w2, [3, 3, 4, 4])
  const wd = tf.tensor2d(inp.wd, [16, 3])
  const dw = tf.tensor4d(inp.dw, [3, 3, 3, 1])
  const y = tf.oneHot(tf.tensor1d(inp.labels, 'int32'), 3)
  try {
    const net = (xa: any, w1a: any, b1a: any, w2a: any, wda: any) => {
      const c1 = tf.add(tf.conv2d(xa, w1a, 1, 'valid'), b1a) as any
      const p = tf.maxPool(c1, 2, 2, 'valid')
      const c2 = tf.relu(tf.conv2d(p as any, w2a, 2, 'same'))
      const logits = tf.matMul(tf.reshape(c2, [2, 16]), wda)
      return { logits, loss: tf.losses.softmaxCrossEntropy(y, logits) }
    }
    const fwd: Float32Array[] = []
    const grads: Float32Array[] = []
    const forward = tf.tidy(() => tf.softmax(net(x, w1, b1, w2, wd).logits))
    fwd.push((await forward.data()) as Float32Array)
    forward.dispose()
    const g = tf.tidy(() =>
      tf.grads((a: any, b: any, c: any, d: any, e: any) => net(a, b, c, d, e).loss)([x, w1, b1, w2, wd]),
    )
    for (const t of g) grads.push((await t.data()) as Float32Array)
    tf.dispose(g)
    if (depthwise) {
      const dForward = tf.tidy(() => tf.depthwiseConv2d(x, dw, 1, 'same'))
      fwd.push((await dForward.data()) as Float32Array)
      dForward.dispose()
      const dg = tf.tidy(() =>
        tf.grads((a: any, b: any) => tf.sum(tf.square(tf.depthwiseConv2d(a, b, 1, 'same'))) as any)([x, dw]),
      )
      for (const t of dg) grads.push((await t.data()) as Float32Array)
      tf.dispose(dg)
    }
    return { fwd, grads }
  } finally {
    tf.dispose([x, w1, b1, w2, wd, dw, y])
  }
}

function maxAbsDiff(a: Float32Array[], b: Float32Array[]): number {
  let max = 0
  for (let i = 0; i < a.length; i++) {
    if (a[i].length !== b[i].length) return Number.POSITIVE_INFINITY
    for (let j = 0; j < a[i].length; j++) {
      const d = Math.abs(a[i][j] - b[i][j])
      if (!(d <= max)) max = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d
    }
  }
  return max
}

/** Runs the self-test graph on cpu and on `backend`, leaving `backend` active. Throws when outside tolerance. */
export async function selfTest(tf: Tf, backend: BackendName): Promise<SelfTestResult> {
  const started = performance.now()
  const depthwise = backendCapabilities(backend).depthwiseConvGradients
  const inputs = selfTestInputs()
  if (!(await tf.setBackend('cpu'))) throw new Error('cpu backend unavailable')
  // The cpu backend greets its first Node user with advice to install tfjs-node; here it is only the reference.
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null
  if (cpu && backend !== 'cpu') cpu.firstUse = false
  const ref = await runSelfTestGraph(tf, inputs, depthwise)
  if (!(await tf.setBackend(backend))) throw new Error(`setBackend('${backend}') failed`)
  await tf.ready()
  const got = await runSelfTestGraph(tf, inputs, depthwise)
  const result = {
    maxForwardDiff: maxAbsDiff(ref.fwd, got.fwd),
    maxGradDiff: maxAbsDiff(ref.grads, got.grads),
    ms: Math.round(performance.now() - started),
  }
  if (!(result.maxForwardDiff <= SELF_TEST_TOLERANCE.forward) || !(result.maxGradDiff <= SELF_TEST_TOLERANCE.grad)) {
    throw new Error(
      `self-test on ${backend} outside tolerance: forward ${result.maxForwardDiff}, gradients ${result.maxGradDiff}`,
    )
  }
  return result
}

/**
 * Loads TensorFlow.js for the preferred backend and proves it with `selfTest`; on failure falls back along
 * tensorflow -> wasm -> cpu. `auto` starts at tensorflow. Throws only when even cpu fails.
 */
export async function selectBackend(preferred: BackendName | 'auto'): Promise<SelectedBackend> {
  const start = preferred === 'auto' ? 0 : FALLBACK_ORDER.indexOf(preferred)
  const rejected: SelectedBackend['rejected'] = []
  for (const backend of FALLBACK_ORDER.slice(start)) {
    try {
      const tf = loadFor(backend)
      const result = await selfTest(tf, backend)
      // measured on tensorflow only (bench/engine-eager.ts): the other backends keep the library's layers
      if (backend === 'tensorflow') useFastLayers(tf)
      return { tf, backend, selfTest: result, rejected }
    } catch (err) {
      rejected.push({ backend, reason: err instanceof Error ? err.message : String(err) })
    }
  }
  throw new Error(`no usable TensorFlow.js backend: ${rejected.map((r) => `${r.backend}: ${r.reason}`).join('; ')}`)
}
