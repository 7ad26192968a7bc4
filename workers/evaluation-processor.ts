// Runs one model evaluation: claims the row, forks an inference process that loads the model and the
// labelled file and computes loss, accuracy, per-class precision/recall and the confusion matrix (the
// engine's evaluate.ts), and records the result. TensorFlow.js stays in the child, so lock renewal never
// starves. Bad data fails at once (UnrecoverableError); a crashed child is retried by BullMQ. The child
// runs under the training processes' hard limit (TRAINING_MEMORY_BYTES, it shares their machine): past it
// it is killed and the evaluation fails `out_of_memory` for good (a rerun would be killed again).
import { type ChildProcess, fork } from 'node:child_process'
import { type Job, UnrecoverableError, type Worker } from 'bullmq'
import type { DatasetFormat } from '../src/datasets/types.js'
import { inferenceProcessCommand } from '../src/inference/pool.js'
import type { InferenceChildMessage } from '../src/inference/protocol.js'
import { type MemoryKill, memoryKillMessage, watchChildMemory } from '../src/lib/memory-watchdog.js'
import { modelDir } from '../src/modules/models/models-service.js'
import type { EvaluationPayload } from '../src/queue/catalog.js'
import { consume } from '../src/queue/registry.js'
import type { WorkerDeps } from './deps.js'

/** What the evaluation processor needs of the worker. */
export type EvaluationDeps = Pick<WorkerDeps, 'config' | 'db' | 'storage' | 'log'>

/** Evaluation children of this process, so closing the worker stops them. */
/** Evaluation processes of this worker, killed on shutdown (an evaluation is cheap to rerun). */
export const activeEvaluations = new Set<ChildProcess>()

type Outcome =
  | Extract<InferenceChildMessage, { type: 'evaluated' }>
  | Extract<InferenceChildMessage, { type: 'fatal' }>
  | { type: 'crashed'; message: string }
  | { type: 'out_of_memory'; kill: MemoryKill; peakRssBytes: number }

function runChild(
  request: { modelDir: string; dataset: object; backend: string; graph?: object },
  limitBytes: number,
): Promise<Outcome> {
  const { path, execArgv } = inferenceProcessCommand()
  const child = fork(path, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' })
  activeEvaluations.add(child)
  const memory = watchChildMemory(child, { limitBytes })
  return new Promise<Outcome>((resolve) => {
    let outcome: Outcome | null = null
    child.on('message', (msg: InferenceChildMessage) => {
      if (msg.type === 'evaluated' || msg.type === 'fatal') outcome = msg
    })
    child.on('exit', (code, signal) => {
      activeEvaluations.delete(child)
      memory.stop()
      if (memory.killed) resolve({ type: 'out_of_memory', kill: memory.killed, peakRssBytes: memory.peakRssBytes })
      else resolve(outcome ?? { type: 'crashed', message: `the evaluation process exited (${code ?? signal})` })
    })
    child.send({ type: 'evaluate', ...request })
  })
}

export function createEvaluationProcessor(deps: EvaluationDeps) {
  const { db, storage, config, log } = deps
  return async ({ evaluationId }: EvaluationPayload, job: Pick<Job, 'attemptsMade' | 'opts'>) => {
    const row = await db.evaluation.findUnique({
      where: { id: evaluationId },
      include: { model: { include: { artifact: true } }, file: true },
    })
    if (!row) return { skipped: 'no such evaluation' }
    if (row.status === 'succeeded' || row.status === 'failed') return { skipped: row.status }
    const claim = await db.evaluation.updateMany({
      where: { id: evaluationId, status: { in: ['queued', 'running'] } },
      data: { status: 'running' },
    })
    if (!claim.count) return { skipped: 'finished meanwhile' }
    const fail = async (code: string, message: string) => {
      await db.evaluation.updateMany({
        where: { id: evaluationId, status: 'running' },
        data: { status: 'failed', errorCode: code, errorMessage: message, finishedAt: new Date() },
      })
      return { failed: code }
    }
    if (row.model.deletedAt) return fail('model_missing', `Model ${row.modelId} was deleted.`)
    if (row.file.deletedAt || !row.file.storagePath) return fail('file_missing', `File ${row.fileId} was deleted.`)

    const outcome = await runChild(
      {
        modelDir: await modelDir(storage, row.model),
        dataset: {
          path: await storage.localPath(row.file.storagePath),
          format: row.file.format as DatasetFormat,
          options: { labelColumn: row.file.labelColumn ?? undefined },
        },
        backend: config.tfBackend,
        graph: config.frozenGraph,
      },
      config.trainingMemoryBytes,
    )
    if (outcome.type === 'out_of_memory') {
      const message = `${memoryKillMessage('evaluation process', outcome.kill, 'TRAINING_MEMORY_BYTES')} Evaluate a smaller model or file.`
      log.warn(
        { evaluationId, ...outcome.kill, peakRssBytes: outcome.peakRssBytes },
        'evaluation process over its memory budget: killed',
      )
      await fail('out_of_memory', message)
      throw new UnrecoverableError(message)
    }
    if (outcome.type === 'evaluated') {
      await db.evaluation.updateMany({
        where: { id: evaluationId, status: 'running' },
        data: {
          status: 'succeeded',
          result: outcome.evaluation as object,
          backend: outcome.backend,
          finishedAt: new Date(),
          errorCode: null,
          errorMessage: null,
        },
      })
      log.info({ evaluationId, ms: outcome.ms, accuracy: outcome.evaluation.accuracy }, 'evaluation succeeded')
      return { accuracy: outcome.evaluation.accuracy }
    }
    const permanent = outcome.type === 'fatal' && outcome.permanent
    const code = outcome.type === 'fatal' ? outcome.code : 'evaluation_process_crashed'
    const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1)
    if (permanent || lastAttempt) {
      await fail(code, outcome.message)
      if (permanent) throw new UnrecoverableError(outcome.message)
      return { failed: code }
    }
    // Back to `queued` so the row tells the truth while BullMQ waits to retry.
    await db.evaluation.updateMany({ where: { id: evaluationId, status: 'running' }, data: { status: 'queued' } })
    throw new Error(outcome.message)
  }
}

/**
 * Consumes the `evaluations` queue in the worker process. Stops (and kills its children) when the worker
 * closes its Redis connection, so worker.ts needs one line to register it.
 */
export function startEvaluationWorker(deps: EvaluationDeps): Worker {
  const evaluate = createEvaluationProcessor(deps)
  const worker = consume('evaluations', deps.config, (payload, job) => evaluate(payload, job), {
    // evaluations compete with training for the same cores
    concurrency: 1,
    lockDuration: 30_000,
  })
  worker.on('failed', (job, err) => deps.log.warn({ queueJob: job?.id, err: err.message }, 'evaluation failed'))
  worker.on('error', (err) => deps.log.warn({ err: err.message }, 'evaluation worker error'))
  return worker
}
