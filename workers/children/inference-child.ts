// An inference process: forked by the API's inference pool (long-lived, many requests, models kept in an
// LRU cache) or by the evaluation processor (one `evaluate`, then exit). TensorFlow.js lives only here:
// tfjs-node cannot run in worker threads, and the API's event loop must stay free. It never touches
// PostgreSQL or Redis. When the parent goes away it exits at once.
import { selectBackend } from '../../src/engine/backend.js'
import { EngineError } from '../../src/engine/errors.js'
import { exportGraphModelSavedModel, exportSavedModel } from '../../src/engine/graph/export.js'
import type { Tf } from '../../src/engine/tf.js'
import { evaluateDataset, InputError, loadCachedModel, predictInputs } from '../../src/inference/compute.js'
import { ModelCache } from '../../src/inference/model-cache.js'
import type {
  ExportRequest,
  InferenceChildMessage,
  InferenceParentMessage,
  PredictRequest,
} from '../../src/inference/protocol.js'

let tf: Tf | null = null
let cache: ModelCache | null = null
let started = false

function send(message: InferenceChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve()
    process.send(message, undefined, {}, () => resolve())
  })
}

async function predict(req: PredictRequest): Promise<void> {
  const t0 = performance.now()
  try {
    if (!tf || !cache) throw new Error('predict before init')
    const t = tf
    const rows = req.inputs.kind === 'image' ? req.inputs.images.length : req.inputs.rows
    const { probs, classes, forward } = await cache.use(
      req.model.key,
      req.model.dir,
      (m) => predictInputs(t, m, req.inputs),
      rows,
    )
    await send({
      type: 'result',
      id: req.id,
      probs,
      classes,
      forward,
      held: cache.keys(),
      // to 0.1 ms: a small model's whole forward pass takes about a millisecond
      ms: Math.round((performance.now() - t0) * 10) / 10,
    })
  } catch (err) {
    if (err instanceof InputError)
      await send({ type: 'failed', id: req.id, code: 'invalid_input', message: err.message, details: err.details })
    else await send({ type: 'failed', id: req.id, code: 'inference_failed', message: (err as Error).message })
  }
}

async function exportModel(req: ExportRequest): Promise<void> {
  const t0 = performance.now()
  try {
    if (!cache || !tf) throw new Error('export before init')
    const t = tf
    const out = await cache.use(req.model.key, req.model.dir, async (m) =>
      m.model ? exportSavedModel(m.model, m.meta) : exportGraphModelSavedModel(t, req.model.dir, m.meta),
    )
    if ('reason' in out) {
      const where = out.layer ? `layer "${out.layer}" (${out.className}): ` : ''
      await send({
        type: 'failed',
        id: req.id,
        code: 'model_not_freezable',
        message: `${where}${out.reason}`,
        details: out.layer ? [{ field: `layers.${out.layer}`, message: out.reason }] : [],
      })
      return
    }
    await send({
      type: 'exported',
      id: req.id,
      savedModel: out.savedModel,
      saved_model: out.saved_model,
      held: cache.keys(),
      ms: Math.round(performance.now() - t0),
    })
  } catch (err) {
    await send({ type: 'failed', id: req.id, code: 'inference_failed', message: (err as Error).message })
  }
}

function fatal(err: unknown): void {
  const e = err as { name?: string; code?: unknown; message?: string; permanent?: boolean }
  const permanent = err instanceof EngineError ? err.permanent : e?.name === 'DatasetValidationError'
  const code = typeof e?.code === 'string' ? e.code : 'inference_failed'
  void send({ type: 'fatal', code, message: e?.message ?? String(err), permanent }).then(() => process.exit(1))
}

if (!process.send) {
  console.error('inference-child must be started with child_process.fork (no IPC channel)')
  process.exit(1)
}

process.on('message', (msg: InferenceParentMessage) => {
  switch (msg?.type) {
    case 'init':
      if (started) return
      started = true
      selectBackend(msg.backend)
        .then(async (selected) => {
          tf = selected.tf
          const t = selected.tf
          cache = new ModelCache(msg.cacheBytes, (key, dir) =>
            loadCachedModel(t, key, dir, msg.graph, msg.memoryLimitBytes),
          )
          await send({ type: 'ready', backend: selected.backend, selfTestMs: selected.selfTest.ms })
        })
        .catch(fatal)
      break
    case 'predict':
      void predict(msg)
      break
    case 'export':
      void exportModel(msg)
      break
    case 'evict':
      cache?.drop(msg.keyPrefix)
      break
    case 'evaluate': {
      if (started) return
      started = true
      const t0 = performance.now()
      selectBackend(msg.backend)
        .then(async (selected) => {
          const evaluation = await evaluateDataset(selected.tf, msg)
          await send({
            type: 'evaluated',
            backend: selected.backend,
            evaluation,
            ms: Math.round(performance.now() - t0),
          })
          process.disconnect()
          process.exit(0)
        })
        .catch(fatal)
      break
    }
  }
})
process.on('disconnect', () => process.exit(0))
process.on('uncaughtException', fatal)
process.on('unhandledRejection', fatal)
