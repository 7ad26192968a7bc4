// The one entry point for frozen forward passes (transfer backbone features, a distillation teacher's
// outputs, a whole model's probabilities for evaluations and predictions):
//
//   const f = await frozenForward(tf, { model, cutLayer, backend, settings })
//   const y = f.apply(x)          // one batch, inference mode; the caller disposes y
//   f.path, f.reason              // 'graph' | 'eager', and why (for the job's events)
//   f.bytes, f.dispose()          // memory held by the compiled session (0 on the eager path); release it
//
// It runs the frozen part as a TensorFlow graph through tfjs-node's SavedModel session when the backend is
// tensorflow, the setting is not `off` and every layer class is covered (layers.ts); otherwise it runs the
// LayersModel op by op and `reason` says why. The first graph batch is checked against the eager result on
// two rows; a mismatch beyond 1e-4 * max(1, max|eager|) switches to eager for good.
//
// Compiled graphs are shared: in this process by content (refcounted sessions), across processes through the
// on-disk cache (saved-model-cache.ts) keyed by the sha256 of the compiled part (topology below the cut and
// its weights), so later jobs, evaluations and the inference pool reuse them.
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import type { BackendName, GraphSettings } from '../protocol.js'
import type { LayersModel, SymbolicTensor, Tensor, Tf } from '../tf.js'
import { compileGraph, GRAPH_COMPILER_VERSION, isUncovered, planGraph } from './compile.js'
import { findGraph, type GraphEntryMeta, pruneGraphs, removePrivateGraph, writeGraph } from './saved-model-cache.js'

/** REFIT_FROZEN_GRAPH and where compiled graphs are kept (config.ts: `frozenGraph`). */
export const DEFAULT_GRAPH_SETTINGS: GraphSettings = { mode: 'auto', cacheDir: null, cacheBytes: 2 * 1024 ** 3 }

/** Largest difference between graph and eager outputs accepted, relative to max(1, max|eager|). */
export const GRAPH_TOLERANCE = 1e-4

/** A frozen forward pass, on the graph or the eager path. */
export interface FrozenForward {
  /** which path `apply` takes (may turn from graph to eager after the first batch's check) */
  readonly path: 'graph' | 'eager'
  /** why this path: e.g. "compiled", "compiled graph from the cache", "REFIT_FROZEN_GRAPH=off", "layer x (Lambda): ..." */
  readonly reason: string
  /** the layer that keeps the model eager, when a layer is the reason */
  readonly layer: string | null
  /** sha256 of the compiled part (compiler version, topology below the cut, weights); null on the eager path */
  readonly contentSha256: string | null
  /** sha256 of the compiled saved_model.pb; null on the eager path */
  readonly compiledSha256: string | null
  /** per-sample output shape (at the cut layer, or the model's output) */
  readonly outputShape: number[]
  /** bytes the SavedModel session holds (its constant weights); 0 on the eager path */
  readonly bytes: number
  /** ms spent compiling or loading the graph (0 eager) */
  readonly compileMs: number
  /** largest |graph - eager| seen by the first-batch check, or null before it ran / on the eager path */
  readonly checkedMaxDiff: number | null
  /** one batch through the frozen part, inference mode; the caller disposes the result */
  apply(x: Tensor): Tensor
  /** releases the session (shared sessions close when their last user disposes); the LayersModel is untouched */
  dispose(): void
}

/** What to run: `model` up to `cutLayer`'s output (default: the model's output). */
export interface FrozenForwardOptions {
  model: LayersModel
  cutLayer?: string | null
  /** the active backend; only `tensorflow` has SavedModel sessions */
  backend: BackendName | string
  settings?: GraphSettings
  /** compare the first graph batch against eager on two rows (default true) */
  check?: boolean
}

type Session = any

interface SharedSession {
  session: Promise<Session>
  users: number
}
const sessions = new Map<string, SharedSession>()

async function openSession(tf: Tf, dir: string): Promise<Session> {
  return (tf as any).node.loadSavedModel(dir, ['serve'], 'serving_default')
}

function eagerModel(tf: Tf, model: LayersModel, output: SymbolicTensor | null): LayersModel {
  // shares the model's layers: never disposed on its own (that would free the base model's weights)
  return output ? tf.model({ inputs: model.inputs, outputs: output }) : model
}

function maxAbs(a: Float32Array): number {
  let m = 0
  for (const v of a) m = Math.max(m, Math.abs(v))
  return m
}

function eagerForward(
  tf: Tf,
  sub: LayersModel,
  outputShape: number[],
  reason: string,
  layer: string | null = null,
): FrozenForward {
  return {
    path: 'eager',
    reason,
    layer,
    contentSha256: null,
    compiledSha256: null,
    outputShape,
    bytes: 0,
    compileMs: 0,
    checkedMaxDiff: null,
    apply: (x) => tf.tidy(() => sub.predict(x) as Tensor),
    dispose: () => {},
  }
}

/** Compiles (or finds) the graph of `model` up to `cutLayer` and returns how to run it; see the file comment. */
export async function frozenForward(tf: Tf, opts: FrozenForwardOptions): Promise<FrozenForward> {
  const settings = opts.settings ?? DEFAULT_GRAPH_SETTINGS
  const output = opts.cutLayer ? (opts.model.getLayer(opts.cutLayer).output as SymbolicTensor) : null
  const sub = eagerModel(tf, opts.model, output)
  const outputShape = ((output ?? opts.model.outputs[0]).shape as number[]).slice(1)
  if (settings.mode === 'off') return eagerForward(tf, sub, outputShape, 'REFIT_FROZEN_GRAPH=off')
  if (opts.backend !== 'tensorflow' || typeof (tf as any).node?.loadSavedModel !== 'function')
    return eagerForward(tf, sub, outputShape, `backend ${opts.backend} has no TensorFlow graph sessions`)
  const plan = planGraph(opts.model, output ?? undefined)
  if (isUncovered(plan))
    return eagerForward(
      tf,
      sub,
      outputShape,
      plan.layer ? `layer "${plan.layer}" (${plan.className}): ${plan.reason}` : plan.reason,
      plan.layer,
    )
  const t0 = performance.now()
  let contentSha256: string
  let meta: GraphEntryMeta
  let shared: SharedSession
  let source: string
  try {
    const compiled = compileGraph(plan)
    contentSha256 = compiled.contentSha256
    const existing = sessions.get(contentSha256)
    const found = settings.cacheDir ? await findGraph(settings.cacheDir, contentSha256) : null
    // the cache's entry, or what compiling here gave
    meta = found?.meta ?? {
      contentSha256,
      compiledSha256: createHash('sha256').update(compiled.savedModel).digest('hex'),
      bytes: compiled.savedModel.byteLength,
      inputShape: compiled.inputShape,
      outputShape: compiled.outputShape,
      compilerVersion: GRAPH_COMPILER_VERSION,
    }
    if (existing) {
      shared = existing
      source = 'compiled graph shared in this process'
    } else {
      let dir: string
      if (found) {
        dir = found.dir
        source = 'compiled graph from the cache'
      } else {
        dir = await writeGraph(settings.cacheDir, contentSha256, compiled.savedModel, meta)
        if (settings.cacheDir) await pruneGraphs(settings.cacheDir, settings.cacheBytes, dir)
        source = 'compiled'
      }
      const session = openSession(tf, dir)
      shared = { session, users: 0 }
      sessions.set(contentSha256, shared)
      session.then(
        () => removePrivateGraph(settings.cacheDir, dir),
        () => {
          if (sessions.get(contentSha256) === shared) sessions.delete(contentSha256)
        },
      )
    }
    shared.users++
    await shared.session
  } catch (err) {
    return eagerForward(tf, sub, outputShape, `graph compile failed: ${(err as Error).message}`)
  }
  const session = await shared.session
  const compileMs = Math.round(performance.now() - t0)
  let current: 'graph' | 'eager' = 'graph'
  let reason = source
  let checkedMaxDiff: number | null = null
  let checked = opts.check === false
  let disposed = false
  const release = () => {
    if (disposed) return
    disposed = true
    shared.users--
    if (shared.users === 0 && sessions.get(contentSha256) === shared) {
      sessions.delete(contentSha256)
      session.dispose()
    }
  }
  const graphApply = (x: Tensor): Tensor => tf.tidy(() => session.predict(x) as Tensor)
  const f: FrozenForward = {
    get path() {
      return current
    },
    get reason() {
      return reason
    },
    layer: null,
    contentSha256,
    compiledSha256: meta.compiledSha256,
    outputShape,
    get bytes() {
      return current === 'graph' && !disposed ? meta.bytes : 0
    },
    compileMs,
    get checkedMaxDiff() {
      return checkedMaxDiff
    },
    apply(x: Tensor): Tensor {
      if (current === 'eager') return tf.tidy(() => sub.predict(x) as Tensor)
      const y = graphApply(x)
      if (!checked) {
        checked = true
        const rows = Math.min(2, x.shape[0] ?? 0)
        const [g, e] = tf.tidy(() => {
          const part = tf.slice(x, 0, rows)
          return [tf.slice(y, 0, rows), sub.predict(part) as Tensor]
        })
        const gv = g.dataSync() as Float32Array
        const ev = e.dataSync() as Float32Array
        tf.dispose([g, e])
        let diff = 0
        for (let i = 0; i < ev.length; i++) diff = Math.max(diff, Math.abs(gv[i] - ev[i]))
        if (!Number.isFinite(diff)) diff = Number.POSITIVE_INFINITY
        checkedMaxDiff = diff
        if (diff > GRAPH_TOLERANCE * Math.max(1, maxAbs(ev))) {
          current = 'eager'
          reason = `the compiled graph differs from eager by ${diff} on the first batch`
          release()
          y.dispose()
          return tf.tidy(() => sub.predict(x) as Tensor)
        }
      }
      return y
    },
    dispose: release,
  }
  return f
}

/**
 * Runs `f` over `rows` samples, `batchSize` at a time, into one flat Float32Array (`rows * prod(outputShape)`).
 * `input(start, end)` makes a batch's input tensor (disposed here). Yields to the event loop between batches
 * (IPC: a cancel gets in) and returns null once `isCancelled` turns true.
 */
export async function forwardRows(
  f: FrozenForward,
  rows: number,
  batchSize: number,
  input: (start: number, end: number) => Tensor,
  isCancelled: () => boolean = () => false,
): Promise<Float32Array | null> {
  const dim = f.outputShape.reduce((a, b) => a * b, 1)
  const out = new Float32Array(rows * dim)
  for (let start = 0; start < rows; start += batchSize) {
    if (isCancelled()) return null
    const end = Math.min(rows, start + batchSize)
    const x = input(start, end)
    let y: Tensor
    try {
      y = f.apply(x)
    } finally {
      x.dispose()
    }
    try {
      out.set((await y.data()) as Float32Array, start * dim)
    } finally {
      y.dispose()
    }
    await new Promise((resolve) => setImmediate(resolve))
  }
  return out
}

/** Event data describing a frozen forward pass, for job events. */
export function forwardEventData(f: FrozenForward): Record<string, unknown> {
  return {
    forward: f.path,
    forward_reason: f.reason,
    ...(f.layer ? { eager_layer: f.layer } : {}),
    ...(f.path === 'graph'
      ? { graph_sha256: f.compiledSha256, graph_compile_ms: f.compileMs, graph_check_max_diff: f.checkedMaxDiff }
      : {}),
  }
}

/**
 * The job event announcing which path a frozen forward pass takes and why (`what`: "backbone", "teacher").
 * A layer keeping a model eager is a warning: the user can replace it; the setting or the backend is info.
 */
export function frozenForwardEvent(what: string, f: FrozenForward) {
  return {
    type: 'event' as const,
    level: f.path === 'eager' && f.layer ? ('warn' as const) : ('info' as const),
    message:
      f.path === 'graph'
        ? `${what} forward pass: graph (${f.reason}, ${f.compileMs} ms)`
        : `${what} forward pass: eager (${f.reason})`,
    data: forwardEventData(f),
  }
}

/** sha256 of a compiled graph on disk (tests and tools). */
export async function savedModelSha256(dir: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path.join(dir, 'saved_model.pb')))
    .digest('hex')
}
