// Runs one fine-tuning job: claims it in PostgreSQL, forks a training process (TensorFlow.js lives only
// there, one job per process, so the BullMQ lock keeps renewing and memory goes back to the OS), turns
// the process's messages into events, metric rows, checkpoints and progress, and registers the
// fine-tuned model. Every write after the claim is fenced on the attempt number, so a stale worker
// that lost the job cannot overwrite the new owner's state.
import { type ChildProcess, fork } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Job } from 'bullmq'
import { UnrecoverableError } from 'bullmq'
import type { DatasetFormat } from '../src/datasets/types.js'
import type { ChildMessage, TrainRequest } from '../src/engine/protocol.js'
import { fineTunedModelId, newId } from '../src/lib/ids.js'
import { addJobEvent } from '../src/modules/jobs/job-events.js'
import { modelDir } from '../src/modules/models/models-service.js'
import { parseTrainingPayload } from '../src/queue/catalog.js'
import type { WorkerDeps } from './deps.js'

const here = dirname(fileURLToPath(import.meta.url))
const compiled = import.meta.url.endsWith('.js')

/** The training process entry: compiled JS when we run from dist/, the TypeScript source under tsx. */
export function trainingProcessCommand(): { path: string; execArgv: string[] } {
  return compiled
    ? { path: join(here, 'training-process.js'), execArgv: [] }
    : { path: join(here, 'training-process.ts'), execArgv: ['--import', 'tsx'] }
}

type Outcome =
  | { kind: 'done'; msg: Extract<ChildMessage, { type: 'done' }> }
  | { kind: 'error'; msg: Extract<ChildMessage, { type: 'error' }> }

/**
 * Starts a training process that only picks the best backend and proves it with its self-test, so the
 * worker knows and reports at start what its jobs will run on.
 */
export async function probeBackend(backend: TrainRequest['backend']) {
  const { path, execArgv } = trainingProcessCommand()
  const child = fork(path, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' })
  const warnings: string[] = []
  return new Promise<{ backend: string; selfTest: unknown; warnings: string[] }>((resolve, reject) => {
    let result: { backend: string; selfTest: unknown } | null = null
    child.on('message', (msg: ChildMessage) => {
      if (msg.type === 'backend') result = { backend: msg.backend, selfTest: msg.selfTest }
      if (msg.type === 'event') warnings.push(msg.message)
      if (msg.type === 'error') reject(new Error(`backend probe failed: ${msg.message}`))
    })
    child.on('exit', (code) =>
      result ? resolve({ ...result, warnings }) : reject(new Error(`backend probe exited ${code}`)),
    )
    child.send({ type: 'probe', backend })
  })
}

/** Jobs this worker process is training, so a cancel broadcast reaches the right child. */
export const activeTrainings = new Map<string, { child: ChildProcess; cancel: () => void }>()

export function createTrainingProcessor(deps: WorkerDeps) {
  const { db, storage, log, config } = deps

  return async (bullJob: Job) => {
    const { jobId } = parseTrainingPayload(bullJob.data)
    const current = await db.fineTuningJob.findUnique({ where: { id: jobId } })
    if (!current) return { skipped: 'no such job' }
    if (current.status !== 'queued' && current.status !== 'running') return { skipped: current.status }
    const attempt = current.attempt + 1
    const claim = await db.fineTuningJob.updateMany({
      where: { id: jobId, status: current.status, attempt: current.attempt },
      data: {
        status: 'running',
        attempt,
        startedAt: current.startedAt ?? new Date(),
        workerPid: process.pid,
        statusReason: null,
        progress: { epoch: 0, total_epochs: (current.hyperparameters as { n_epochs: number }).n_epochs, fraction: 0 },
      },
    })
    if (!claim.count) return { skipped: 'claimed by another worker or cancelled' }
    const fenced = { id: jobId, attempt }
    const event = (
      level: 'info' | 'warn' | 'error',
      message: string,
      data?: Record<string, unknown>,
      type?: 'message' | 'metrics',
    ) => addJobEvent(db, jobId, level, message, data, type)
    await event('info', `Training started (attempt ${attempt}) on worker ${process.pid}`)

    const job = (await db.fineTuningJob.findUnique({
      where: { id: jobId },
      include: { trainingFile: true, validationFile: true },
    }))!
    const base = await db.model.findUnique({ where: { id: job.baseModelId }, include: { artifact: true } })
    if (!base || base.deletedAt)
      return failJob(deps, fenced, 'base_model_missing', `Base model ${job.baseModelId} no longer exists.`)
    if (!job.trainingFile.storagePath)
      return failJob(deps, fenced, 'training_file_missing', `Training file ${job.trainingFileId} was deleted.`)

    const outputKey = `jobs/${jobId}/attempt-${attempt}`
    const request: TrainRequest = {
      type: 'train',
      jobId,
      method: { type: 'transfer' },
      baseModelDir: await modelDir(storage, base),
      baseModelId: base.id,
      training: {
        path: storage.resolve(job.trainingFile.storagePath),
        format: job.trainingFile.format as DatasetFormat,
        options: { labelColumn: job.trainingFile.labelColumn ?? undefined },
      },
      validation: job.validationFile?.storagePath
        ? {
            path: storage.resolve(job.validationFile.storagePath),
            format: job.validationFile.format as DatasetFormat,
            options: { labelColumn: job.validationFile.labelColumn ?? undefined },
          }
        : undefined,
      hyperparameters: job.hyperparameters as unknown as TrainRequest['hyperparameters'],
      seed: job.seed,
      outputDir: storage.resolve(outputKey),
      backend: config.tfBackend,
    }

    const { path, execArgv } = trainingProcessCommand()
    const child = fork(path, [], {
      execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    })
    let cancelSent = false
    const cancel = () => {
      if (cancelSent || !child.connected) return
      cancelSent = true
      child.send({ type: 'cancel' })
    }
    activeTrainings.set(jobId, { child, cancel })
    await db.fineTuningJob.updateMany({ where: fenced, data: { trainerPid: child.pid ?? null } })
    // A cancel may have arrived between the claim and now.
    const fresh = await db.fineTuningJob.findUnique({ where: { id: jobId }, select: { status: true } })
    if (fresh?.status === 'cancelling') cancel()

    let lastProgressWrite = 0
    let outcome = null as Outcome | null
    const startedAt = Date.now()
    let backend: string | null = null

    // Messages are handled strictly in order: a metric row must not race the `done` that follows it.
    let chain: Promise<unknown> = Promise.resolve()
    const handle = async (msg: ChildMessage) => {
      switch (msg.type) {
        case 'backend':
          backend = msg.backend
          await db.fineTuningJob.updateMany({ where: fenced, data: { backend: msg.backend } })
          await event('info', `Backend ${msg.backend} passed its self-test`, {
            backend: msg.backend,
            self_test: msg.selfTest,
          })
          break
        case 'event':
          await event(msg.level, msg.message, msg.data)
          break
        case 'progress': {
          const now = Date.now()
          const done = (msg.epoch - 1 + msg.step / Math.max(1, msg.totalSteps)) / Math.max(1, msg.totalEpochs)
          if (now - lastProgressWrite < 1000 && done < 1) break
          lastProgressWrite = now
          const elapsed = (now - startedAt) / 1000
          const estimatedFinish = done > 0.01 ? Math.round(now / 1000 + (elapsed * (1 - done)) / done) : null
          await db.fineTuningJob.updateMany({
            where: fenced,
            data: {
              progress: {
                epoch: msg.epoch,
                total_epochs: msg.totalEpochs,
                step: msg.step,
                total_steps: msg.totalSteps,
                fraction: Math.min(1, Math.round(done * 1000) / 1000),
                samples_per_second: Math.round(msg.samplesPerSecond),
                estimated_finish: estimatedFinish,
              },
            },
          })
          break
        }
        case 'epoch': {
          const rows = Object.entries(msg.metrics).filter(([, v]) => typeof v === 'number' && Number.isFinite(v))
          // Upsert on (job, step, name): a replayed epoch after a crash never duplicates a row.
          await db.$transaction(
            rows.map(([name, value]) =>
              db.metric.upsert({
                where: { jobId_step_name: { jobId, step: msg.step, name } },
                create: { jobId, step: msg.step, epoch: msg.epoch, name, value: value as number },
                update: { epoch: msg.epoch, value: value as number },
              }),
            ),
          )
          const m = msg.metrics
          await event(
            'info',
            `Epoch ${msg.epoch}: loss ${m.loss.toFixed(4)}, accuracy ${m.accuracy.toFixed(4)}${m.val_accuracy !== undefined ? `, val_loss ${m.val_loss?.toFixed(4)}, val_accuracy ${m.val_accuracy.toFixed(4)}` : ''}`,
            { epoch: msg.epoch, step: msg.step, ...msg.metrics },
            'metrics',
          )
          break
        }
        case 'checkpoint': {
          const digest = await storage.digest(storage.key(msg.dir))
          const artifactId = newId('art')
          await db.$transaction(async (tx) => {
            await tx.artifact.create({
              data: {
                id: artifactId,
                projectId: job.projectId,
                kind: 'checkpoint',
                path: digest.path,
                sha256: digest.sha256,
                bytes: BigInt(digest.bytes),
              },
            })
            await tx.checkpoint.upsert({
              where: { jobId_step: { jobId, step: msg.step } },
              create: {
                id: newId('ftckpt'),
                jobId,
                epoch: msg.epoch,
                step: msg.step,
                metrics: msg.metrics as object,
                artifactId,
              },
              update: { metrics: msg.metrics as object, artifactId },
            })
          })
          break
        }
        case 'done':
        case 'error':
          outcome = msg.type === 'done' ? { kind: 'done', msg } : { kind: 'error', msg }
          break
      }
    }
    child.on('message', (msg: ChildMessage) => {
      chain = chain
        .then(() => handle(msg))
        .catch((err) => log.error({ err, jobId }, 'handling a training message failed'))
    })

    const exitCode = await new Promise<number | null>((resolve) => {
      child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null)))
      child.on('error', (err) => log.error({ err, jobId }, 'training process error'))
      child.send(request)
    })
    await chain
    activeTrainings.delete(jobId)
    const result = outcome

    const status = await db.fineTuningJob.findUnique({ where: { id: jobId }, select: { status: true, attempt: true } })
    if (status?.attempt !== attempt) return { stale: true }
    if (result?.kind === 'done' && result.msg.cancelled)
      return finishCancelled(deps, fenced, 'stopped at the end of a batch')
    if (status.status === 'cancelling') return finishCancelled(deps, fenced, 'training process stopped')
    if (result?.kind === 'error') {
      await failJob(deps, fenced, result.msg.code, result.msg.message)
      if (result.msg.permanent) throw new UnrecoverableError(result.msg.message)
      return { failed: result.msg.code }
    }
    if (result?.kind !== 'done')
      return failJob(
        deps,
        fenced,
        'training_process_crashed',
        `The training process exited (code ${exitCode}) before finishing.`,
      )

    const lastProgress = ((await db.fineTuningJob.findUnique({ where: { id: jobId }, select: { progress: true } }))
      ?.progress ?? {}) as object
    // Register the fine-tuned model: artifact first, then the rows that point at it.
    const modelKey = storage.key(result.msg.modelDir)
    const digest = await storage.digest(modelKey)
    const metadata = JSON.parse(await readFile(join(result.msg.modelDir, 'metadata.json'), 'utf8'))
    const modelId = fineTunedModelId(job.baseModelId, job.suffix, jobId)
    const finalMetrics = await db.metric.findMany({ where: { jobId }, orderBy: { step: 'desc' }, take: 8 })
    const lastStep = finalMetrics[0]?.step
    const metrics = {
      final: Object.fromEntries(finalMetrics.filter((m) => m.step === lastStep).map((m) => [m.name, m.value])),
      evaluation: result.msg.evaluation,
    }
    await db.$transaction(async (tx) => {
      const artifactId = newId('art')
      await tx.artifact.create({
        data: {
          id: artifactId,
          projectId: job.projectId,
          kind: 'model',
          path: modelKey,
          sha256: digest.sha256,
          bytes: BigInt(digest.bytes),
        },
      })
      await tx.model.upsert({
        where: { id: modelId },
        create: {
          id: modelId,
          projectId: job.projectId,
          kind: 'fine_tuned',
          description: `Fine-tuned from ${job.baseModelId} by ${jobId}`,
          baseModelId: job.baseModelId,
          jobId,
          trainingFileId: job.trainingFileId,
          artifactId,
          metadata: { ...metadata, metrics, backend, seed: job.seed },
        },
        update: { artifactId, metadata: { ...metadata, metrics, backend, seed: job.seed }, deletedAt: null },
      })
      await tx.fineTuningJob.updateMany({
        where: { ...fenced, status: 'running' },
        data: {
          status: 'succeeded',
          fineTunedModelId: modelId,
          finishedAt: new Date(),
          trainedSamples: BigInt(result.msg.trainedSamples),
          progress: { ...lastProgress, fraction: 1, estimated_finish: null },
          statusReason: null,
        },
      })
    })
    const acc = result.msg.evaluation?.accuracy
    await event(
      'info',
      `Job succeeded: ${modelId}${acc !== undefined ? ` (validation accuracy ${acc.toFixed(4)})` : ''}`,
      {
        fine_tuned_model: modelId,
        evaluation: result.msg.evaluation,
        seconds: Math.round((Date.now() - startedAt) / 100) / 10,
      },
    )
    return { fineTunedModel: modelId }
  }
}

async function failJob(deps: WorkerDeps, fenced: { id: string; attempt: number }, code: string, message: string) {
  const r = await deps.db.fineTuningJob.updateMany({
    where: { ...fenced, status: { in: ['running', 'cancelling'] } },
    data: { status: 'failed', errorCode: code, errorMessage: message, finishedAt: new Date(), statusReason: code },
  })
  if (r.count) await addJobEvent(deps.db, fenced.id, 'error', `Job failed: ${message}`, { code })
  return { failed: code }
}

async function finishCancelled(deps: WorkerDeps, fenced: { id: string; attempt: number }, how: string) {
  const r = await deps.db.fineTuningJob.updateMany({
    where: { ...fenced, status: { in: ['running', 'cancelling'] } },
    data: { status: 'cancelled', finishedAt: new Date(), statusReason: `cancelled by user; ${how}` },
  })
  if (r.count) await addJobEvent(deps.db, fenced.id, 'info', `Job cancelled: ${how}`)
  return { cancelled: true }
}
