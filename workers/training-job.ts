// Runs one fine-tuning job: claims it in PostgreSQL, forks a training process (TensorFlow.js lives only
// there, one job per process, so the BullMQ lock keeps renewing and memory goes back to the OS; a sweep's
// next trial may take the process its previous trial left idle: training-processes.ts), turns the process's
// messages into events, metric rows, checkpoints and progress, and registers the fine-tuned model.
//
// Delivery guarantees:
// - A job found `running` was owned by a worker that died or stalled (BullMQ handed it to us after its
//   lock expired): we take it over with the next attempt number and resume from its last checkpoint.
// - Every write after the claim is fenced on the attempt (lifecycle/fence.ts): a stale worker's writes fail.
// - Status changes (claim, hand back, succeed, fail, cancel) are the lifecycle module's transitions; this
//   file never writes the job row itself.
// - Metrics upsert on (job, step, name) and checkpoints on (job, step): a replayed epoch never duplicates.
// - Checkpoints and the model reserve their bytes in the project's storage quota before they are recorded
//   (limits/storage-reservation.ts, as uploads do): one that does not fit is removed and the job fails
//   `storage_quota_exceeded`; the checkpoints recorded before it stay.
// - On shutdown (SIGTERM) the training process stops at the end of its batch and the job goes back to the
//   queue, to resume from its last checkpoint, without spending an attempt.
import type { ChildProcess } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { DelayedError, type Job, UnrecoverableError } from 'bullmq'
import { isTransientError, retryTransient } from '../src/db/transient.js'
import type { ChildMessage, TrainRequest } from '../src/engine/protocol.js'
import { newId } from '../src/lib/ids.js'
import { memoryKillMessage } from '../src/lib/memory-watchdog.js'
import {
  featurePath,
  type JobFeatureCache,
  prepareJobFeatureCache,
} from '../src/modules/features/feature-cache-service.js'
import { resultFileKey, storeResultFile } from '../src/modules/files/result-files.js'
import { BATCH_METRICS, EPOCH_ROWS_ONLY } from '../src/modules/jobs/batch-metrics.js'
import { EtaEstimator } from '../src/modules/jobs/eta.js'
import { catalogued, JobFailure } from '../src/modules/jobs/failure-codes.js'
import { addJobEvent, type EventLevel } from '../src/modules/jobs/job-events.js'
import { type Fence, fenced, StaleAttemptError } from '../src/modules/jobs/lifecycle/fence.js'
import * as lifecycle from '../src/modules/jobs/lifecycle/lifecycle.js'
import { isQuotaRefusal, localDirBytes, StorageReservation } from '../src/modules/limits/storage-reservation.js'
import { advanceSweep } from '../src/modules/sweeps/sweep-scheduler.js'
import { forgetJob, recordThroughput } from '../src/modules/workers/throughput.js'
import { parseTrainingPayload } from '../src/queue/catalog.js'
import { enqueueTraining, trainingClassFor } from '../src/queue/enqueue.js'
import type { WorkerDeps } from './deps.js'
import { forkTrainingProcess, TrainingProcesses } from './training-processes.js'
import { buildTrainRequest } from './training-request.js'

/**
 * Starts a training process that only picks the best backend and proves it with its self-test, so the
 * worker knows and reports at start what its jobs will run on.
 */
export async function probeBackend(backend: TrainRequest['backend']) {
  const child = forkTrainingProcess()
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

type Outcome =
  | { kind: 'done'; msg: Extract<ChildMessage, { type: 'done' }> }
  | { kind: 'error'; msg: Extract<ChildMessage, { type: 'error' }> }

interface ActiveTraining {
  child: ChildProcess
  /** stop at the end of the current batch because the user cancelled */
  cancel(): void
  /** stop at the end of the current batch and put the job back in the queue (worker shutting down) */
  handBack(): void
  /** checkpoint mid-epoch at the end of the current batch, stop, and leave the job paused */
  pause(): void
}

/** Jobs this worker process is training, so a cancel broadcast or a shutdown reaches the right child. */
export const activeTrainings = new Map<string, ActiveTraining>()

export function createTrainingProcessor(deps: WorkerDeps) {
  const { db, storage, log, config } = deps
  const processes = new TrainingProcesses({
    memoryLimitBytes: config.trainingMemoryBytes,
    maxAlive: config.workerConcurrency,
  })

  const event = async (
    fence: Fence,
    level: EventLevel,
    message: string,
    data?: object,
    type?: 'message' | 'metrics',
  ) => {
    await fenced(db, fence, (tx) => addJobEvent(tx, fence.jobId, level, message, data as Record<string, unknown>, type))
    deps.notify(fence.jobId)
  }

  let lastDbWarning = 0
  const waitingForDb = (jobId: string) => {
    if (Date.now() - lastDbWarning < 5000) return
    lastDbWarning = Date.now()
    log.warn({ jobId }, 'database unreachable; holding training messages until it returns')
  }

  const processor = async (bullJob: Job, token?: string) => {
    const { jobId } = parseTrainingPayload(bullJob.data)
    // every line about this job carries its id
    const jobLog = log.child?.({ jobId }) ?? log
    const current = await db.fineTuningJob.findUnique({ where: { id: jobId } })
    if (!current) return { skipped: 'no such job' }
    if (current.status === 'cancelling') {
      // Its worker died while cancelling: nothing is running any more.
      await lifecycle.finishCancel(deps, { jobId, attempt: current.attempt }, 'its worker stopped')
      return { cancelled: true }
    }
    if (current.status !== 'queued' && current.status !== 'running') return { skipped: current.status }

    const takeover = current.status === 'running'
    const resumeFrom =
      takeover || current.resumeCheckpointId
        ? await db.checkpoint.findFirst({ where: { jobId }, orderBy: { step: 'desc' }, include: { artifact: true } })
        : null
    const attempt = current.attempt + 1
    const claimed = await lifecycle.claim(
      deps,
      jobId,
      { status: current.status, attempt: current.attempt },
      {
        workerPid: process.pid,
        startedAt: current.startedAt,
        resumeCheckpointId: resumeFrom?.id ?? null,
        // a pause asked of the lost worker still holds: the new training process checkpoints and stops
        statusReason:
          current.statusReason === lifecycle.PAUSING
            ? lifecycle.PAUSING
            : takeover
              ? `taken over after worker ${current.workerPid} stopped responding`
              : null,
        event: takeover
          ? {
              level: 'warn',
              message: `Worker ${current.workerPid} stopped responding; attempt ${attempt} on worker ${process.pid} ${resumeFrom ? `resumes from the checkpoint of epoch ${resumeFrom.epoch}` : 'starts over (no checkpoint yet)'}`,
              data: { previous_worker: current.workerPid, resume_epoch: resumeFrom?.epoch ?? null },
            }
          : {
              level: 'info',
              message: resumeFrom
                ? `Training resumed from the ${(resumeFrom.metrics as { mid_epoch?: boolean }).mid_epoch ? 'mid-epoch ' : ''}checkpoint of epoch ${resumeFrom.epoch}, step ${resumeFrom.step} (attempt ${attempt}) on worker ${process.pid}`
                : `Training started (attempt ${attempt}) on worker ${process.pid}`,
            },
      },
    )
    if (!claimed) return { skipped: 'claimed by another worker or cancelled' }
    const fence: Fence = claimed
    const startedAt = Date.now()
    jobLog.info({ attempt, takeover }, 'training job claimed')

    const job = (await db.fineTuningJob.findUnique({
      where: { id: jobId },
      include: { trainingFile: true, validationFile: true },
    }))!
    let request: TrainRequest
    try {
      request = await buildTrainRequest(db, storage, job, {
        outputDir: storage.workPath(`jobs/${jobId}/attempt-${attempt}`),
        backend: config.tfBackend,
        resumeCheckpointDir: resumeFrom ? await storage.localPath(resumeFrom.artifact.path) : null,
        maxImagePixels: config.maxImagePixels,
        graph: config.frozenGraph,
      })
    } catch (err) {
      if (!(err instanceof JobFailure)) throw err
      await lifecycle.fail(deps, fence, err.code, err.message)
      throw new UnrecoverableError(err.message)
    }
    // Feature cache across jobs: a failing lookup only costs the job its features' reuse.
    const forward = featurePath(deps.backend ?? config.tfBackend, config.frozenGraph.mode)
    const features: JobFeatureCache | null = await prepareJobFeatureCache(deps, job, request, forward).catch((err) => {
      jobLog.warn({ err: (err as Error).message }, 'feature cache lookup failed; computing features')
      return null
    })
    if (features) request.featureCache = features.slots

    // a sweep's trials may share a process: the next one takes what the previous one loaded
    const reuseKey = job.sweepId ? `sweep:${job.sweepId}` : null
    if (reuseKey) request.keepAlive = true
    const trainer = processes.acquire(reuseKey)
    const child = trainer.child
    // the hard limit: killed past TRAINING_MEMORY_BYTES (cgroup v2 memory.max, else the RSS watchdog)
    const memory = trainer.memory
    trainer.onMemoryKill = (k) => jobLog.warn({ ...k }, 'training process over its memory budget: killed')
    if (trainer.jobsDone > 0)
      await event(
        fence,
        'info',
        `Training process ${child.pid} reused from ${trainer.lastJobId}, an earlier trial of this sweep: TensorFlow is loaded and self-tested, and what that trial read stays in memory`,
        { trainer_pid: child.pid ?? null, previous_job: trainer.lastJobId, jobs_before: trainer.jobsDone },
      )
    // A cancel overrides anything; a pause overrides a hand-back (the job waits for its user, not a worker)
    // and is not undone by one.
    let stopRequested: 'cancel' | 'hand-back' | 'pause' | null = null
    const stop = (why: 'cancel' | 'hand-back' | 'pause') => {
      if (stopRequested === 'cancel' || stopRequested === why || !child.connected) return
      if (why === 'hand-back' && stopRequested === 'pause') return
      stopRequested = why
      child.send({ type: why === 'pause' ? 'pause' : 'cancel', jobId })
    }
    activeTrainings.set(jobId, {
      child,
      cancel: () => stop('cancel'),
      handBack: () => stop('hand-back'),
      pause: () => stop('pause'),
    })
    await lifecycle.recordTrainerPid(deps, fence, child.pid ?? null).catch((err) => {
      if (!(err instanceof StaleAttemptError)) throw err
    })
    // A cancel may have arrived between the claim and now.
    const fresh = await db.fineTuningJob.findUnique({
      where: { id: jobId },
      select: { status: true, statusReason: true },
    })
    if (fresh?.status === 'cancelling') stop('cancel')
    else if (fresh?.statusReason === lifecycle.PAUSING) stop('pause')
    let stale = false
    /** why a checkpoint was refused by the storage quota: the training process is stopped, the job fails */
    let quotaRefusal: string | null = null
    /** the job's events said once that its storage reservations go through PostgreSQL (Redis down) */
    let saidFallback = false
    let outcome = null as Outcome | null
    let backend: string | null = null
    let lastProgressWrite = 0
    const etaEstimator = new EtaEstimator()
    let lastBatchFlush = 0
    /** batch metric rows not yet written: flushed with a progress write or at the epoch's end */
    let pendingBatches: { step: number; epoch: number; loss: number; accuracy: number }[] = []
    const flushBatches = async () => {
      if (!pendingBatches.length) return
      const batch = pendingBatches
      pendingBatches = []
      await fenced(db, fence, (tx) =>
        tx.metric.createMany({
          data: batch.flatMap((b) =>
            BATCH_METRICS.map((name) => ({
              jobId,
              step: b.step,
              epoch: b.epoch,
              name,
              value: name === 'batch_loss' ? b.loss : b.accuracy,
            })),
          ),
          skipDuplicates: true, // a resumed attempt may report a step again
        }),
      )
    }

    const handle = async (msg: ChildMessage) => {
      switch (msg.type) {
        case 'backend':
          backend = msg.backend
          await lifecycle.recordBackend(deps, fence, msg.backend, msg.selfTest)
          break
        case 'event':
          await event(fence, msg.level, msg.message, msg.data)
          break
        case 'progress': {
          const now = Date.now()
          const fraction = (msg.epoch - 1 + msg.step / Math.max(1, msg.totalSteps)) / Math.max(1, msg.totalEpochs)
          if (now - lastProgressWrite < 1000 && fraction < 1) break
          lastProgressWrite = now
          const eta = etaEstimator.update(now, fraction)
          const progress = {
            epoch: msg.epoch,
            total_epochs: msg.totalEpochs,
            step: msg.step,
            total_steps: msg.totalSteps,
            fraction: Math.min(1, Math.round(fraction * 1000) / 1000),
            samples_per_second: Math.round(msg.samplesPerSecond),
            estimated_finish: eta,
          }
          recordThroughput(jobId, msg.samplesPerSecond)
          await lifecycle.recordProgress(deps, fence, progress)
          break
        }
        case 'batch': {
          pendingBatches.push({ step: msg.step, epoch: msg.epoch, loss: msg.loss, accuracy: msg.accuracy })
          if (Date.now() - lastBatchFlush >= 1000) {
            lastBatchFlush = Date.now()
            await flushBatches()
            deps.notify(jobId)
          }
          break
        }
        case 'epoch': {
          await flushBatches()
          const rows = Object.entries(msg.metrics).filter(([, v]) => typeof v === 'number' && Number.isFinite(v))
          await fenced(db, fence, async (tx) => {
            for (const [name, value] of rows)
              await tx.metric.upsert({
                where: { jobId_step_name: { jobId, step: msg.step, name } },
                create: { jobId, step: msg.step, epoch: msg.epoch, name, value: value as number },
                update: { epoch: msg.epoch, value: value as number },
              })
          })
          const m = msg.metrics
          const val =
            m.val_accuracy !== undefined
              ? `, val_loss ${m.val_loss?.toFixed(4)}, val_accuracy ${m.val_accuracy.toFixed(4)}`
              : ''
          await event(
            fence,
            'info',
            `Epoch ${msg.epoch}: loss ${m.loss.toFixed(4)}, accuracy ${m.accuracy.toFixed(4)}${val}`,
            { epoch: msg.epoch, step: msg.step, ...msg.metrics },
            'metrics',
          )
          // A sweep trial's epoch rows are what ASHA ranks at its rungs (src/modules/sweeps/asha.ts): a pass
          // over the sweep now, waiting for its lease, decides before this chain handles the next message.
          // The training process goes on meanwhile, but a trial stopped here (on this epoch's rows, before its
          // last epoch's are written: this chain waits for the pass) ends `cancelled` even if the process
          // finished its epochs meanwhile (the outcome below reads `cancelling` first): the decision is the
          // rung's, so it does not depend on the process's speed. A pass that fails or cannot get the lease is
          // not fatal: the reconcile pass decides while the trial still runs.
          if (job.sweepId)
            await advanceSweep(deps, job.sweepId, 10_000).catch((err) =>
              jobLog.warn({ err: err.message }, 'sweep pass after an epoch failed; the reconcile pass retries'),
            )
          break
        }
        case 'checkpoint': {
          if (quotaRefusal) {
            await rm(msg.dir, { recursive: true, force: true })
            break
          }
          // its bytes count in the project's quota before they are recorded (the row is what counts)
          const held = new StorageReservation(deps, job.projectId)
          try {
            await held.reserve(await localDirBytes(msg.dir), `The checkpoint of epoch ${msg.epoch}`)
          } catch (err) {
            // PostgreSQL unreachable: the message chain waits for it and handles this checkpoint again
            if (isTransientError(err)) throw err
            await rm(msg.dir, { recursive: true, force: true })
            if (!isQuotaRefusal(err)) {
              // storage accounting busy past its retries (Redis and PostgreSQL both answered, neither let
              // the reservation through): this checkpoint is dropped, said so, and training goes on
              await event(
                fence,
                'warn',
                `The checkpoint of epoch ${msg.epoch} was not kept: ${(err as Error).message} Training goes on; the next checkpoint is tried again.`,
                { epoch: msg.epoch, step: msg.step, code: (err as { code?: string }).code ?? null },
              )
              break
            }
            quotaRefusal = err.message
            // stop at the end of the batch; not a user cancel, so the job fails once the process exits
            if (child.connected) child.send({ type: 'cancel', jobId })
            break
          }
          if (held.fellBack && !saidFallback) {
            saidFallback = true
            jobLog.warn({}, 'Redis unavailable: storage reserved through PostgreSQL')
            await event(
              fence,
              'warn',
              'Redis is unavailable: checkpoint and model bytes are reserved in the storage quota through PostgreSQL until it is back',
              { epoch: msg.epoch },
            )
          }
          try {
            await recordCheckpoint(msg)
          } finally {
            await held.release()
          }
          deps.notify(jobId)
          break
        }
        case 'features':
        case 'features_corrupt':
          await handleFeatures(msg)
          break
        case 'done':
        case 'error':
          outcome = msg.type === 'done' ? { kind: 'done', msg } : { kind: 'error', msg }
          break
        case 'idle':
          break
      }
    }

    const recordCheckpoint = async (msg: Extract<ChildMessage, { type: 'checkpoint' }>) => {
      {
        // fs: already in place; s3: uploaded now, before the row that points at it
        const digest = await storage.putDir(storage.keyOf(msg.dir), msg.dir)
        // a pause's checkpoint: the metrics of its epoch so far
        const metrics = msg.midEpoch ? { ...msg.metrics, mid_epoch: true } : msg.metrics
        await fenced(db, fence, async (tx) => {
          const artifact = await tx.artifact.create({
            data: {
              id: newId('art'),
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
              metrics: metrics as object,
              artifactId: artifact.id,
            },
            update: { epoch: msg.epoch, metrics: metrics as object, artifactId: artifact.id },
          })
        })
      }
    }

    const handleFeatures = async (
      msg: Extract<ChildMessage, { type: 'features' }> | Extract<ChildMessage, { type: 'features_corrupt' }>,
    ) => {
      try {
        if (msg.type === 'features_corrupt') await features?.corrupt(msg)
        else if (features) {
          await event(fence, 'info', await features.store(msg), { which: msg.which, rows: msg.rows })
          // a transfer sweep holds its other trials back until the first one's features are stored
          if (job.sweepId && msg.which === 'training')
            void advanceSweep(deps, job.sweepId).catch((err) =>
              jobLog.warn({ err: err.message }, 'sweep pass after the features failed; the reconcile pass retries'),
            )
        }
      } catch (err) {
        if (err instanceof StaleAttemptError) throw err
        jobLog.warn({ err: (err as Error).message }, 'feature cache write failed; the job goes on without it')
      }
    }

    // Messages are handled strictly in order: a metric row must not race the `done` that follows it.
    let chain: Promise<unknown> = Promise.resolve()
    /** the process said it is clean and waits for another job (a keepAlive request, after `done`) */
    let idle = false
    let ended: (exitCode: number | null) => void = () => {}
    const onMessage = (msg: ChildMessage) => {
      if (msg.type === 'idle') {
        idle = true
        ended(null)
      }
      chain = chain
        // PostgreSQL restarting must not lose a metric row: wait for it and write in order.
        .then(() => (stale ? undefined : retryTransient(() => handle(msg), { onRetry: () => waitingForDb(jobId) })))
        .catch((err) => {
          if (err instanceof StaleAttemptError) {
            // Another worker owns the job now: stop computing at once, write nothing more.
            stale = true
            child.kill('SIGKILL')
            jobLog.warn({ jobId, attempt }, 'lost the job to another worker; training process killed')
          } else {
            jobLog.error({ err, jobId }, 'handling a training message failed')
            // a checkpoint is never lost without a word in the job's events
            if (msg.type === 'checkpoint')
              return event(
                fence,
                'warn',
                `The checkpoint of epoch ${msg.epoch} was not kept: ${(err as Error).message}`,
                { epoch: msg.epoch, step: msg.step },
              ).catch(() => {})
          }
        })
    }
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => ended(code ?? (signal ? -1 : null))
    const onError = (err: Error) => jobLog.error({ err, jobId }, 'training process error')
    child.on('message', onMessage)
    child.on('exit', onExit)
    child.on('error', onError)
    const exitCode = await new Promise<number | null>((resolve) => {
      ended = resolve
      child.send(request)
    })
    await chain
    child.off('message', onMessage).off('exit', onExit).off('error', onError)
    activeTrainings.delete(jobId)
    forgetJob(jobId)
    // kept for the sweep's next trial only when it ended as it should: not lost, killed, refused or handed back
    const keep = idle && !stale && !quotaRefusal && (stopRequested === null || stopRequested === 'cancel')
    processes.release(trainer, jobId, keep ? reuseKey : null)
    if (stale) return { stale: true }
    const result = outcome
    // A model the training process saved but the job will not register (cancelled after its last epoch,
    // refused by the quota, lost to another worker) is removed: no stored byte goes uncounted.
    const discardModel = async () => {
      const dir = result?.kind === 'done' ? result.msg.modelDir : ''
      if (!dir) return
      await rm(dir, { recursive: true, force: true })
      await storage.remove(storage.keyOf(dir)).catch(() => {})
    }

    const now = await db.fineTuningJob.findUnique({ where: { id: jobId }, select: { status: true, attempt: true } })
    if (now?.attempt !== attempt) {
      await discardModel()
      return { stale: true }
    }
    const stoppedEarly = result?.kind === 'done' && result.msg.cancelled
    if (now.status === 'cancelling' || (stoppedEarly && stopRequested === 'cancel')) {
      await discardModel()
      await retryTransient(() =>
        lifecycle.finishCancel(deps, fence, 'the training process stopped at the end of its batch'),
      )
      return { cancelled: true }
    }
    if (memory.killed) {
      await discardModel()
      const k = memory.killed
      // permanent: the same job on the same data would be killed again
      const message = `${memoryKillMessage('training process', k, 'TRAINING_MEMORY_BYTES')} Lower batch_size or train on smaller images.`
      await lifecycle.fail(deps, fence, 'out_of_memory', message, {
        rss_bytes: k.rssBytes,
        limit_bytes: k.limitBytes,
        peak_rss_bytes: memory.peakRssBytes,
        limited_by: k.by,
      })
      throw new UnrecoverableError(message)
    }
    if (quotaRefusal) {
      await discardModel()
      // permanent: the same job would pass the quota again; its earlier checkpoints stay
      await retryTransient(() => lifecycle.fail(deps, fence, 'storage_quota_exceeded', quotaRefusal!))
      throw new UnrecoverableError(quotaRefusal)
    }
    if (stopRequested === 'pause' && stoppedEarly) {
      // paused: this queue job is done; resume enqueues a new one
      await retryTransient(() => lifecycle.finishPause(deps, fence))
      return { paused: true }
    }
    if (stopRequested === 'hand-back' && (stoppedEarly || result === null)) {
      await retryTransient(() => lifecycle.handBack(deps, fence, process.pid))
      // `auto` is decided again: when the job now belongs to the other class's queue, it moves there
      if ((await trainingClassFor(deps, job)) !== config.workerResourceClass) {
        await enqueueTraining(deps, job)
        return { handedBack: true, requeued: 'other resource class' }
      }
      if (token) {
        await bullJob.moveToDelayed(Date.now() + 100, token)
        throw new DelayedError()
      }
      return { handedBack: true }
    }
    if (result?.kind === 'error') {
      // a code the catalogue does not know (a newer training process) keeps its name in the message
      const code = catalogued(result.msg.code)
      const message = code === result.msg.code ? result.msg.message : `${result.msg.code}: ${result.msg.message}`
      await retryTransient(() => lifecycle.fail(deps, fence, code, message))
      if (result.msg.permanent) throw new UnrecoverableError(result.msg.message)
      return { failed: result.msg.code }
    }
    if (result?.kind !== 'done') {
      const code = 'training_process_crashed'
      await retryTransient(() =>
        lifecycle.fail(deps, fence, code, `The training process exited (code ${exitCode}) before finishing.`),
      )
      return { failed: code }
    }

    const registered = await registerModel(deps, fence, job, result.msg, backend, (Date.now() - startedAt) / 1000, () =>
      waitingForDb(jobId),
    )
    if (typeof registered === 'object' && registered) throw new UnrecoverableError(registered.quotaRefusal)
    return registered ? { fineTunedModel: registered } : { stale: true }
  }
  /** ends the training processes left idle for a sweep's next trial (the worker is closing) */
  return Object.assign(processor, { closeIdle: () => processes.closeIdle() })
}

/**
 * The model directory uploaded first, then the lifecycle's `succeed` records it with the job's success.
 * The model and the result file reserve their bytes in the project's storage quota first: when they do
 * not fit, both are removed and the job fails `storage_quota_exceeded` (its checkpoints stay).
 */
async function registerModel(
  deps: WorkerDeps,
  fence: Fence,
  job: { id: string; projectId: string; trainingFileId: string; validationFileId: string | null },
  done: Extract<ChildMessage, { type: 'done' }>,
  backend: string | null,
  seconds: number,
  onRetry: () => void,
) {
  const { storage } = deps
  const modelKey = storage.keyOf(done.modelDir)
  const held = new StorageReservation(deps, job.projectId)
  try {
    await held.reserve(await localDirBytes(done.modelDir), 'The fine-tuned model')
    return await storeModel()
  } catch (err) {
    if (!isQuotaRefusal(err)) throw err
    await rm(done.modelDir, { recursive: true, force: true })
    await storage.remove(modelKey)
    await storage.remove(resultFileKey(job.id))
    await retryTransient(() => lifecycle.fail(deps, fence, 'storage_quota_exceeded', err.message), { onRetry })
    return { quotaRefusal: err.message }
  } finally {
    await held.release()
  }

  async function storeModel() {
    const digest = await storage.putDir(modelKey, done.modelDir)
    const metadata = JSON.parse(await readFile(join(done.modelDir, 'metadata.json'), 'utf8'))
    // which data the held-out evaluation used: the validation file, or the split kept out of the training file
    const evaluation = done.evaluation && {
      ...done.evaluation,
      file: job.validationFileId ?? job.trainingFileId,
      data: job.validationFileId ? 'validation_file' : 'validation_split',
    }
    const rows = await retryTransient(
      () => deps.db.metric.findMany({ where: { jobId: job.id, ...EPOCH_ROWS_ONLY }, orderBy: { step: 'asc' } }),
      { onRetry },
    )
    const resultFile = await storeResultFile(storage, job, rows, (bytes) =>
      held.reserve(bytes, "The job's result file"),
    )
    return retryTransient(
      () =>
        lifecycle.succeed(deps, fence, {
          artifact: { path: modelKey, sha256: digest.sha256, bytes: digest.bytes },
          metadata,
          trainedSamples: done.trainedSamples,
          evaluation: (evaluation as Record<string, unknown> | null) ?? null,
          bestEpoch: done.bestEpoch ?? null,
          backend,
          seconds,
          resultFile,
        }),
      { onRetry },
    )
  }
}
