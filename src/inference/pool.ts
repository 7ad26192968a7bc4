// The API's pool of inference processes. The API never runs TensorFlow.js: each request is handed to a
// child process (forked on first use, one per slot), preferably the one that already holds the model in
// its cache. A child that dies is replaced and its requests are retried once elsewhere. A prediction
// still computing at its deadline (REQUEST_TIMEOUT_MS) kills its child: TensorFlow.js cannot be
// interrupted mid-op, and a child left computing would hold every request routed to it.
import { type ChildProcess, fork } from 'node:child_process'
import { existsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SavedModelMetadata } from '../engine/graph/export.js'
import type { BackendName, GraphSettings } from '../engine/protocol.js'
import { AppError, type ErrorDetail } from '../errors.js'
import { ChildMemory, type ChildMemoryOptions } from './child-memory.js'
import type { ExportRequest, InferenceChildMessage, ModelRef, PredictRequest, RawInputs } from './protocol.js'

const here = dirname(fileURLToPath(import.meta.url))
const compiled = import.meta.url.endsWith('.js')

/** The inference process entry: compiled JS under dist/, the TypeScript source under tsx. */
export function inferenceProcessCommand(): { path: string; execArgv: string[] } {
  const js = join(here, '..', '..', 'workers', 'children', 'inference-child.js')
  if (compiled && existsSync(js)) return { path: js, execArgv: [] }
  return { path: join(here, '..', '..', 'workers', 'children', 'inference-child.ts'), execArgv: ['--import', 'tsx'] }
}

/**
 * TensorFlow's threads in each child. Inter-op: one. A prediction's ops run one after another (a whole model
 * is a chain), and with TensorFlow's default of one inter-op thread per core the pool's processes handed every
 * op of a small model between threads that other processes on the same cores were waiting for (mnist-cnn
 * batch 1, 2 clients, load 12-15 on 2 cores: p50 13.0-14.6 -> 7.7-8.7 ms). Intra-op: the cores shared out
 * among the pool's processes (2 cores, 2 processes: one each) instead of TensorFlow's one per core in every
 * process. With more threads than cores, a small model's ops were split across threads that spun, stole work
 * and woke each other (perf, mnist-cnn batch 1: a quarter of a child's CPU in Eigen's work stealing and futex
 * wake-ups). Scratch runs in ABBA order (2 clients, load 2.7-5.4 from other work), intra-op 2 vs 1: child
 * CPU 2.25-3.35 vs 1.72-1.90 ms per request, p50 7.4-12.5 vs 4.7-5.9 ms; mobilenet-v2 batch 32's child CPU
 * per request unchanged (452-523 vs 417-506 ms, load 5-10), its throughput on this shared machine within the
 * noise, lower with one thread when other processes compete hard (fewer threads, a smaller share). A lone
 * client's large batch then uses one core of two: the pool is sized for concurrent requests. The operator's
 * own variables win.
 */
export function childThreads(processes: number, cores = availableParallelism()): Record<string, string> {
  return {
    TF_NUM_INTEROP_THREADS: '1',
    TF_NUM_INTRAOP_THREADS: String(Math.max(1, Math.floor(cores / Math.max(1, processes)))),
  }
}

/** Settings of the pool. */
export interface InferencePoolOptions {
  processes: number
  cacheBytes: number
  backend: BackendName | 'auto'
  /** whole models as TensorFlow graphs in the children (REFIT_FROZEN_GRAPH, config `frozenGraph`) */
  graph?: GraphSettings
  log: { warn(obj: object, msg?: string): void; info(obj: object, msg?: string): void }
  /** hard limit and recycle threshold of each child (child-memory.ts); omitted: no limit */
  memory?: ChildMemoryOptions
}

/** What a prediction yields: probabilities for every row and which process and backend computed them. */
export interface PredictOutcome {
  probs: Float32Array
  classes: number
  backend: string
  /** the compiled TensorFlow graph or the LayersModel op by op */
  forward: 'graph' | 'eager'
  pid: number
  ms: number
}

/** A model compiled into a frozen SavedModel by an inference process. */
export interface ExportOutcome {
  savedModel: Uint8Array
  saved_model: SavedModelMetadata
  pid: number
  ms: number
}

type Pending = {
  retried: boolean
  /** the slot it was routed to, and whether the request has been sent to that child */
  slot?: Slot
  sent?: boolean
  reject: (e: unknown) => void
} & (
  | { req: PredictRequest; resolve: (v: PredictOutcome) => void }
  | { req: ExportRequest; resolve: (v: ExportOutcome) => void }
)

interface Slot {
  index: number
  child: ChildProcess
  ready: Promise<void>
  isReady: boolean
  backend: string | null
  held: Set<string>
  pending: Map<number, Pending>
  memory: ChildMemory | null
  /** replaced after growing past the recycle threshold: its exit is expected */
  retired: boolean
}

/** Validation errors found by a child (an image that does not decode): the API's 400 with details. */
export class ChildInputError extends AppError {
  constructor(message: string, details: ErrorDetail[]) {
    super('invalid_input', message, { details, param: details[0]?.field ?? 'inputs' })
  }
}

export class InferencePool {
  private readonly slots: (Slot | null)[]
  private nextId = 1
  private closed = false

  constructor(private readonly opts: InferencePoolOptions) {
    this.slots = new Array(Math.max(1, opts.processes)).fill(null)
  }

  /** Process ids of the live children, by slot (null where none runs yet). */
  pids(): (number | null)[] {
    return this.slots.map((s) => s?.child.pid ?? null)
  }

  /** Model keys each live child holds, by slot. */
  holdings(): string[][] {
    return this.slots.map((s) => (s ? [...s.held] : []))
  }

  /** `timeoutMs`: past it the request answers 504 `prediction_timeout` and the child computing it is replaced. */
  async predict(model: ModelRef, inputs: RawInputs, opts: { timeoutMs?: number } = {}): Promise<PredictOutcome> {
    if (this.closed) throw new AppError('service_unavailable', 'The inference pool is shutting down.')
    const req: PredictRequest = { type: 'predict', id: this.nextId++, model, inputs }
    return new Promise<PredictOutcome>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const p: Pending = {
        req,
        retried: false,
        resolve: (v: PredictOutcome) => {
          clearTimeout(timer)
          resolve(v)
        },
        reject: (e) => {
          clearTimeout(timer)
          reject(e)
        },
      }
      if (opts.timeoutMs) timer = setTimeout(() => this.expire(p, opts.timeoutMs!), opts.timeoutMs)
      this.dispatch(p)
    })
  }

  /**
   * Compiles the model whole into a frozen SavedModel in the process that holds it (or loads it there);
   * 409 `model_not_freezable` when a layer has no graph translation.
   */
  async exportSavedModel(model: ModelRef): Promise<ExportOutcome> {
    if (this.closed) throw new AppError('service_unavailable', 'The inference pool is shutting down.')
    const req: ExportRequest = { type: 'export', id: this.nextId++, model }
    return new Promise<ExportOutcome>((resolve, reject) => {
      this.dispatch({ req, retried: false, resolve, reject })
    })
  }

  /** The deadline passed: answer 504; a child already computing the request is killed (its exit replaces it). */
  private expire(p: Pending, timeoutMs: number): void {
    const slot = p.slot
    if (!slot?.pending.delete(p.req.id)) return
    p.reject(
      new AppError(
        'prediction_timeout',
        `The prediction took longer than ${timeoutMs} ms (REQUEST_TIMEOUT_MS); its inference process was replaced. Send fewer or smaller inputs.`,
      ),
    )
    // Still waiting for a starting child: the child is not at fault, keep it.
    if (!p.sent) return
    this.opts.log.warn(
      { pid: slot.child.pid, slot: slot.index, timeoutMs, model: p.req.model.key },
      'prediction passed its deadline; killing its inference process',
    )
    slot.child.kill('SIGKILL')
  }

  /** Tells every child to drop the models whose key starts with `keyPrefix`. */
  evict(keyPrefix: string): void {
    for (const s of this.slots) {
      if (!s) continue
      for (const k of s.held) if (k.startsWith(keyPrefix)) s.held.delete(k)
      if (s.child.connected) s.child.send({ type: 'evict', keyPrefix })
    }
  }

  async close(): Promise<void> {
    this.closed = true
    const exits: Promise<unknown>[] = []
    for (const s of this.slots) {
      if (!s) continue
      if (s.child.exitCode === null && s.child.signalCode === null) {
        exits.push(new Promise((r) => s.child.once('exit', r)))
        s.child.kill('SIGTERM')
      }
    }
    const timer = setTimeout(() => {
      for (const s of this.slots) s?.child.kill('SIGKILL')
    }, 5000)
    await Promise.all(exits)
    clearTimeout(timer)
  }

  /**
   * Routing: an idle child holding the model; else an idle (or not yet started) slot; else the least busy
   * holder; else the least busy child. Busy holders give way to idle children so a hot model spreads.
   */
  private choose(key: string): number {
    const load = (i: number) => this.slots[i]?.pending.size ?? 0
    const all = this.slots.map((_, i) => i)
    const holders = all.filter((i) => this.slots[i]?.held.has(key))
    const idleHolder = holders.find((i) => load(i) === 0)
    if (idleHolder !== undefined) return idleHolder
    const idle = all.find((i) => this.slots[i] !== null && load(i) === 0) ?? all.find((i) => this.slots[i] === null)
    if (idle !== undefined) return idle
    const pool = holders.length ? holders : all
    return pool.reduce((best, i) => (load(i) < load(best) ? i : best), pool[0])
  }

  private dispatch(p: Pending): void {
    const i = this.choose(p.req.model.key)
    const slot = this.slots[i] ?? this.spawn(i)
    p.slot = slot
    p.sent = false
    slot.pending.set(p.req.id, p)
    slot.held.add(p.req.model.key)
    slot.ready.then(
      () => {
        if (!slot.pending.has(p.req.id) || !slot.child.connected) return
        p.sent = true
        slot.child.send(p.req)
      },
      () => {
        // the child died before it was ready: its exit handler retries or rejects the request
      },
    )
  }

  /** An idle child that kept more memory than it should is replaced by a fresh one (the old one exits). */
  private recycleIfGrown(slot: Slot): void {
    if (this.closed || slot.retired || !slot.memory?.shouldRecycle()) return
    slot.retired = true
    this.opts.log.info(
      { pid: slot.child.pid, slot: slot.index, rssBytes: slot.memory.rssBytes() },
      'inference process grew past its recycle threshold; replacing it',
    )
    this.spawn(slot.index)
    slot.child.kill('SIGTERM')
  }

  private spawn(index: number): Slot {
    const { path, execArgv } = inferenceProcessCommand()
    const child = fork(path, [], {
      execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
      // an operator's own TF_NUM_INTEROP_THREADS / TF_NUM_INTRAOP_THREADS win
      env: { ...childThreads(this.slots.length), ...process.env },
    })
    let markReady!: () => void
    let markFailed!: (e: Error) => void
    const ready = new Promise<void>((res, rej) => {
      markReady = res
      markFailed = rej
    })
    ready.catch(() => {})
    const memory = this.opts.memory ? new ChildMemory(child, this.opts.memory) : null
    const slot: Slot = {
      index,
      child,
      ready,
      isReady: false,
      backend: null,
      held: new Set(),
      pending: new Map(),
      memory,
      retired: false,
    }
    this.slots[index] = slot
    child.on('message', (msg: InferenceChildMessage) => {
      if (msg.type === 'ready') {
        slot.isReady = true
        slot.backend = msg.backend
        this.opts.log.info({ pid: child.pid, slot: index, backend: msg.backend }, 'inference process ready')
        markReady()
      } else if (msg.type === 'result' || msg.type === 'exported' || msg.type === 'failed') {
        const p = slot.pending.get(msg.id)
        if (!p) return
        slot.pending.delete(msg.id)
        if (msg.type === 'result' && p.req.type === 'predict') {
          slot.held = new Set(msg.held)
          ;(p.resolve as (v: PredictOutcome) => void)({
            probs: msg.probs,
            classes: msg.classes,
            backend: slot.backend!,
            forward: msg.forward,
            pid: child.pid!,
            ms: msg.ms,
          })
        } else if (msg.type === 'exported' && p.req.type === 'export') {
          slot.held = new Set(msg.held)
          ;(p.resolve as (v: ExportOutcome) => void)({
            savedModel: msg.savedModel,
            saved_model: msg.saved_model,
            pid: child.pid!,
            ms: msg.ms,
          })
        } else if (msg.type !== 'failed') {
          p.reject(new Error(`inference process answered ${msg.type} to a ${p.req.type} request`))
        } else if (msg.code === 'model_not_freezable') {
          p.reject(new AppError('model_not_freezable', msg.message, { param: 'format', details: msg.details ?? [] }))
        } else if (msg.code === 'invalid_input') {
          p.reject(new ChildInputError(msg.message, msg.details ?? []))
        } else {
          p.reject(new Error(`inference failed: ${msg.message}`))
        }
        if (slot.pending.size === 0) this.recycleIfGrown(slot)
      } else if (msg.type === 'fatal') {
        this.opts.log.warn({ pid: child.pid, code: msg.code, err: msg.message }, 'inference process failed')
      }
    })
    child.on('error', (err) => this.opts.log.warn({ err: err.message, pid: child.pid }, 'inference process error'))
    child.on('exit', (code, signal) => {
      markFailed(new Error(`inference process exited (${code ?? signal})`))
      if (this.slots[index] === slot) this.slots[index] = null
      if (this.closed) {
        for (const p of slot.pending.values())
          p.reject(new AppError('service_unavailable', 'The inference pool is shutting down.'))
        return
      }
      if (slot.retired) return
      const oom = slot.memory?.killedError() ?? null
      this.opts.log.warn(
        { pid: child.pid, code, signal, slot: index, outOfMemory: oom !== null },
        'inference process exited; replacing it',
      )
      // Replace a child that had been working; one that never got ready is retried lazily on the next request.
      if (slot.isReady || oom) this.spawn(index)
      for (const p of slot.pending.values()) {
        // killed for memory: the same request would only kill the next child too
        if (oom) p.reject(oom)
        else if (p.retried) {
          p.reject(
            new AppError('service_unavailable', 'The inference process crashed twice on this request; retry later.', {
              headers: { 'retry-after': '5' },
            }),
          )
        } else {
          p.retried = true
          this.dispatch(p)
        }
      }
    })
    child.send({
      type: 'init',
      backend: this.opts.backend,
      cacheBytes: this.opts.cacheBytes,
      graph: this.opts.graph,
      memoryLimitBytes: this.opts.memory?.limitBytes ?? 0,
    })
    return slot
  }
}
