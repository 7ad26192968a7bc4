// The one owner of a fine-tuning job's life: the only code that writes `fine_tuning_jobs` (a test fails
// if any other file does). Every status change is a transition of the table in transitions.ts, made by
// `apply` in one transaction that locks the job row, checks the table (and the attempt, for fenced
// transitions), writes the status, its event and, for terminal statuses, the webhook outbox rows. After
// the commit, and only then, it publishes the live-update ping, relays the new deliveries to the queue
// and records the duration histogram for terminal statuses. So a stream that sees a status has seen its
// event, a finished job is announced exactly once per webhook, and no caller has to remember a side
// effect.
//
// To add a transition: an entry in TRANSITIONS, then a function here that calls `apply` with its name.
import type { Queue } from 'bullmq'
import type { Redis } from 'ioredis'
import type { Db } from '../../../db/client.js'
import type { FineTuningJob, Prisma } from '../../../generated/prisma/client.js'
import { fineTunedModelId, newId } from '../../../lib/ids.js'
import { observeJobDuration } from '../../../observability/job-metrics.js'
import type { DeliveryPayload } from '../../../queue/catalog.js'
import { enqueueDeliveries, enqueueTraining, type TrainingQueues } from '../../../queue/enqueue.js'
import { EPOCH_ROWS_ONLY } from '../batch-metrics.js'
import type { JobFailureCode } from '../failure-codes.js'
import { addJobEvent, type EventLevel } from '../job-events.js'
import { notifyJobChanged } from '../job-updates.js'
import { type Fence, fenced } from './fence.js'
import { summarizeMetrics } from './metrics-summary.js'
import { recordDeliveries } from './outbox.js'
import { allowed, isTerminal, type JobStatus, TRANSITIONS, type TransitionName } from './transitions.js'

/** What the lifecycle needs; the API app and the worker's deps both have it. */
export interface LifecycleDeps {
  db: Db
  redis: Redis
  config: { queuePrefix: string }
  queues: TrainingQueues & { webhooks: Queue<DeliveryPayload> }
  log: { warn(obj: object, msg?: string): void }
}

type Tx = Prisma.TransactionClient

interface EventSpec {
  level: EventLevel
  message: string
  data?: Record<string, unknown>
}

interface Step {
  to: JobStatus
  data?: Prisma.FineTuningJobUncheckedUpdateInput
  event: EventSpec
}

interface ApplyOpts {
  /** fenced transitions: the attempt the caller owns */
  fence?: Fence
  /** extra condition on the locked row (e.g. claim expects the attempt it read) */
  expect?: { attempt?: number; statusReason?: string | null; notStatusReason?: string }
  /** decides the target status, the columns and the event from the locked row; null: nothing to do */
  step: (
    tx: Tx,
    row: { status: JobStatus; attempt: number; statusReason: string | null },
  ) => Promise<Step | null> | Step | null
}

/** Every transition the module made in this process, for tests: name, job, from, to. */
export type TransitionListener = (t: { name: TransitionName; jobId: string; from: JobStatus; to: JobStatus }) => void
const listeners = new Set<TransitionListener>()
export function onTransition(fn: TransitionListener): () => void {
  listeners.add(fn)
  return () => listeners.delete(fn)
}

/** Runs one transition; returns the job as committed, or null when it did not apply. */
async function apply(d: LifecycleDeps, name: TransitionName, jobId: string, opts: ApplyOpts) {
  const spec = TRANSITIONS[name]
  const done = await d.db.$transaction(async (tx) => {
    // FOR UPDATE: two transitions of the same job serialize here; the loser re-reads the winner's status.
    const rows = await tx.$queryRaw<{ status: JobStatus; attempt: number; status_reason: string | null }[]>`
      SELECT status::text AS status, attempt, status_reason FROM fine_tuning_jobs WHERE id = ${jobId} FOR UPDATE`
    const row = rows[0]
    if (!row) return null
    if (spec.fenced && (!opts.fence || row.attempt !== opts.fence.attempt)) return null
    if (opts.expect?.attempt !== undefined && row.attempt !== opts.expect.attempt) return null
    if (opts.expect && 'statusReason' in opts.expect && row.status_reason !== opts.expect.statusReason) return null
    if (opts.expect?.notStatusReason !== undefined && row.status_reason === opts.expect.notStatusReason) return null
    if (!(spec.from as readonly (JobStatus | null)[]).includes(row.status)) return null
    const step = await opts.step(tx, { status: row.status, attempt: row.attempt, statusReason: row.status_reason })
    if (!step) return null
    if (!allowed(name, row.status, step.to))
      throw new Error(`transition ${name} may not move a job from ${row.status} to ${step.to}`)
    const terminal = isTerminal(step.to)
    const job = await tx.fineTuningJob.update({
      where: { id: jobId },
      data: { ...step.data, status: step.to, ...(terminal ? { finishedAt: new Date() } : {}) },
    })
    await addJobEvent(tx, jobId, step.event.level, step.event.message, step.event.data)
    const deliveries = terminal ? await recordDeliveries(tx, job) : []
    return { job, from: row.status, deliveries }
  })
  if (!done) return null
  await afterCommit(d, name, done.job, done.from, done.deliveries)
  return done.job
}

/** Side effects that must follow the commit, never precede it. None of them may fail the transition. */
async function afterCommit(
  d: LifecycleDeps,
  name: TransitionName,
  job: FineTuningJob,
  from: JobStatus | null,
  deliveries: string[],
) {
  notifyJobChanged(d.redis, d.config.queuePrefix, job.id)
  for (const fn of listeners) fn({ name, jobId: job.id, from: from as JobStatus, to: job.status })
  if (deliveries.length) await enqueueDeliveries(d.queues.webhooks, d.log, deliveries)
  if (isTerminal(job.status) && job.finishedAt) {
    const method = (job.method as { type?: string } | null)?.type ?? 'unknown'
    const seconds = (job.finishedAt.getTime() - (job.startedAt ?? job.createdAt).getTime()) / 1000
    await observeJobDuration(d.redis, d.config.queuePrefix, { method, status: job.status }, Math.max(0, seconds)).catch(
      () => {},
    )
  }
}

// ---------------------------------------------------------------- API side

/**
 * create: the job row and its first events; queued jobs are enqueued after the commit. `waiting`: the
 * job waits for its files (status validating_files).
 */
export async function createJob(
  d: LifecycleDeps,
  data: Omit<Prisma.FineTuningJobUncheckedCreateInput, 'status'>,
  opts: { ready: boolean; message: string; data?: Record<string, unknown> },
): Promise<FineTuningJob> {
  const to: JobStatus = opts.ready ? 'queued' : 'validating_files'
  if (!allowed('create', null, to)) throw new Error(`create may not make a ${to} job`)
  const job = await d.db.$transaction(async (tx) => {
    const job = await tx.fineTuningJob.create({ data: { ...data, status: to } })
    await addJobEvent(tx, job.id, 'info', opts.message, opts.data)
    if (!opts.ready) await addJobEvent(tx, job.id, 'info', 'Waiting for the training file to be validated')
    return job
  })
  if (opts.ready) await enqueueTraining(d, job)
  await afterCommit(d, 'create', job, null, [])
  return job
}

/**
 * A user's cancel: a job that has not started is cancelled at once (and leaves the queue); a running one
 * becomes `cancelling` (the caller broadcasts it to the worker). Returns which transition applied.
 */
export async function cancelByUser(
  d: LifecycleDeps,
  jobId: string,
  opts: { again?: boolean; by?: CancelCause } = {},
): Promise<'cancel' | 'request_cancel' | null> {
  const now = new Date()
  const by = opts.by
  const cancelled = await apply(d, 'cancel', jobId, {
    step: (_tx, row) => ({
      to: 'cancelled',
      data: {
        statusReason:
          by?.statusReason ??
          (row.status === 'paused' ? 'cancelled by user while paused' : 'cancelled by user before it started'),
        cancelRequestedAt: now,
      },
      event: by?.event ?? {
        level: 'info',
        message: row.status === 'paused' ? 'Job cancelled while paused' : 'Job cancelled before it started',
      },
    }),
  })
  if (cancelled) {
    await Promise.all([
      d.queues.training.remove(jobId).catch(() => 0),
      d.queues.trainingGpu.remove(jobId).catch(() => 0),
    ])
    return 'cancel'
  }
  const requested = await apply(d, 'request_cancel', jobId, {
    step: () => ({
      to: 'cancelling',
      data: { statusReason: by?.statusReason ?? 'cancel requested by user', cancelRequestedAt: now },
      event: by?.event ?? { level: 'info', message: 'Cancel requested; stopping at the end of the current batch' },
    }),
  })
  if (requested) return 'request_cancel'
  // Between the two, a running job may have become paused (or been handed back to the queue): the
  // cancel is not lost, it applies to the job as it is now. Once only: a terminal job stays refused.
  return opts.again === false ? null : cancelByUser(d, jobId, { again: false, by })
}

/**
 * A cancel the service decides, not the user (a sweep's early termination): its status_reason, kept from the
 * request to the end (finish_cancel keeps it), and the event that explains it.
 */
export interface CancelCause {
  statusReason: string
  event: EventSpec
}
/** status_reason of a sweep trial stopped by ASHA (src/modules/sweeps/asha.ts) */
export const EARLY_TERMINATED = 'early_terminated'

/** status_reason of a running job whose pause was requested, until its training process has stopped. */
export const PAUSING = 'pausing'
/** status_reason of a job paused while its files were validated: resume sends it back there. */
export const PAUSED_WHILE_VALIDATING = 'paused by user while its files were being validated'

/**
 * A user's pause: a job that has not started is paused at once (and leaves the queue); a running one
 * keeps running with status_reason "pausing" (the caller broadcasts it to the worker) until its training
 * process has written a mid-epoch checkpoint and exited. Returns which transition applied (null: none,
 * e.g. already pausing).
 */
export async function pauseByUser(
  d: LifecycleDeps,
  jobId: string,
  opts: { again?: boolean } = {},
): Promise<'pause' | 'request_pause' | null> {
  const paused = await apply(d, 'pause', jobId, {
    step: (_tx, row) => ({
      to: 'paused',
      data: {
        statusReason: row.status === 'validating_files' ? PAUSED_WHILE_VALIDATING : 'paused by user before it started',
      },
      event: { level: 'info', message: 'Job paused before it started', data: { from: row.status } },
    }),
  })
  if (paused) {
    await Promise.all([
      d.queues.training.remove(jobId).catch(() => 0),
      d.queues.trainingGpu.remove(jobId).catch(() => 0),
    ])
    return 'pause'
  }
  const requested = await apply(d, 'request_pause', jobId, {
    expect: { notStatusReason: PAUSING },
    step: () => ({
      to: 'running',
      data: { statusReason: PAUSING },
      event: {
        level: 'info',
        message: 'Pause requested; checkpointing at the end of the current batch',
      },
    }),
  })
  if (requested) return 'request_pause'
  // Between the two, a running job may have been handed back to the queue: pause it as it is now, once.
  const row = await d.db.fineTuningJob.findUnique({ where: { id: jobId }, select: { status: true } })
  return opts.again === false || row?.status !== 'queued' ? null : pauseByUser(d, jobId, { again: false })
}

/**
 * resume: a paused job is queued again (enqueued after the commit) to continue from its last checkpoint;
 * one paused while its files were validated goes back to validating_files (the caller promotes it when
 * they are ready).
 */
export async function resume(d: LifecycleDeps, jobId: string) {
  const job = await apply(d, 'resume', jobId, {
    step: async (tx, row) => {
      const last = await tx.checkpoint.findFirst({ where: { jobId }, orderBy: { step: 'desc' } })
      const validating = row.statusReason === PAUSED_WHILE_VALIDATING
      return {
        to: validating ? 'validating_files' : 'queued',
        data: { statusReason: null, ...(last ? { resumeCheckpointId: last.id } : {}) },
        event: {
          level: 'info',
          message: last
            ? `Job resumed: queued to continue from checkpoint ${last.id} (step ${last.step})`
            : validating
              ? 'Job resumed: waiting for its files to be validated'
              : 'Job resumed: queued',
          data: { checkpoint: last?.id ?? null, step: last?.step ?? null },
        },
      }
    },
  })
  if (job?.status === 'queued') await enqueueTraining(d, job)
  return job
}

/** flag_unserved: a queued job no live worker of its class can run gets the reason and one warning. */
export async function flagUnserved(d: LifecycleDeps, jobId: string, reason: string, resourceClass: string) {
  return apply(d, 'flag_unserved', jobId, {
    expect: { notStatusReason: reason },
    step: () => ({
      to: 'queued',
      data: { statusReason: reason },
      event: {
        level: 'warn',
        message: `No live ${resourceClass} worker is registered: the job waits until one starts`,
        data: { resource_class: resourceClass },
      },
    }),
  })
}

/** clear_unserved: a worker of its class is back; the reason goes. */
export async function clearUnserved(d: LifecycleDeps, jobId: string, reason: string) {
  return apply(d, 'clear_unserved', jobId, {
    expect: { statusReason: reason },
    step: () => ({
      to: 'queued',
      data: { statusReason: null },
      event: { level: 'info', message: 'A worker for this job is live again' },
    }),
  })
}

// ---------------------------------------------------------------- file validation (worker)

/** promote: files validated, hyperparameters resolved; enqueued after the commit. */
export async function promote(d: LifecycleDeps, jobId: string, hyperparameters: Record<string, unknown>) {
  const job = await apply(d, 'promote', jobId, {
    step: () => ({
      to: 'queued',
      data: { hyperparameters: hyperparameters as object },
      event: { level: 'info', message: 'Files validated; job queued', data: { hyperparameters } },
    }),
  })
  if (job) await enqueueTraining(d, job)
  return job
}

/** reject: a file failed validation or does not fit; the job fails with that error. */
export async function reject(
  d: LifecycleDeps,
  jobId: string,
  error: { code: JobFailureCode; message: string; param?: string | null },
) {
  return apply(d, 'reject', jobId, {
    step: () => ({
      to: 'failed',
      data: {
        statusReason: 'file validation failed',
        errorCode: error.code,
        errorMessage: error.message,
        errorParam: error.param ?? null,
      },
      event: { level: 'error', message: error.message },
    }),
  })
}

// ---------------------------------------------------------------- training (worker)

/**
 * claim: this worker takes the job with the next attempt number (from `running`: a lost worker's job,
 * taken over). `expected` is what the worker read; a job that moved since is not claimed. Returns the
 * fence for the new attempt, or null.
 */
export async function claim(
  d: LifecycleDeps,
  jobId: string,
  expected: { status: 'queued' | 'running'; attempt: number },
  info: {
    workerPid: number
    startedAt: Date | null
    resumeCheckpointId: string | null
    statusReason: string | null
    event: EventSpec
  },
): Promise<Fence | null> {
  const job = await apply(d, 'claim', jobId, {
    expect: { attempt: expected.attempt },
    step: (_tx, row) =>
      row.status !== expected.status
        ? null
        : {
            to: 'running',
            data: {
              attempt: expected.attempt + 1,
              startedAt: info.startedAt ?? new Date(),
              workerPid: info.workerPid,
              trainerPid: null,
              resumeCheckpointId: info.resumeCheckpointId,
              statusReason: info.statusReason,
            },
            event: info.event,
          },
  })
  return job ? { jobId, attempt: job.attempt } : null
}

/** hand_back: the worker shuts down; back to the queue with the attempt given back. */
export async function handBack(d: LifecycleDeps, fence: Fence, workerPid: number) {
  return apply(d, 'hand_back', fence.jobId, {
    fence,
    step: async (tx) => {
      const last = await tx.checkpoint.findFirst({ where: { jobId: fence.jobId }, orderBy: { step: 'desc' } })
      return {
        to: 'queued',
        data: {
          attempt: fence.attempt - 1,
          workerPid: null,
          trainerPid: null,
          resumeCheckpointId: last?.id ?? null,
          statusReason: 'worker shut down; waiting for a worker to resume it',
        },
        event: {
          level: 'info',
          message: `Worker ${workerPid} is shutting down: job handed back to the queue${last ? `, to resume from the checkpoint of epoch ${last.epoch}` : ''}`,
        },
      }
    },
  })
}

/** fail: training failed; `code` is the job's error.code. */
export async function fail(
  d: LifecycleDeps,
  fence: Fence,
  code: JobFailureCode,
  message: string,
  data?: Record<string, unknown>,
) {
  return apply(d, 'fail', fence.jobId, {
    fence,
    step: () => ({
      to: 'failed',
      data: { errorCode: code, errorMessage: message, statusReason: code, trainerPid: null },
      event: { level: 'error', message: `Job failed: ${message}`, data: { code, ...data } },
    }),
  })
}

/**
 * finish_pause: the training process stopped after a pause (its mid-epoch checkpoint, if it reached a
 * batch, is the job's last): paused, to resume from that checkpoint.
 */
export async function finishPause(d: LifecycleDeps, fence: Fence) {
  return apply(d, 'finish_pause', fence.jobId, {
    fence,
    step: async (tx) => {
      const last = await tx.checkpoint.findFirst({ where: { jobId: fence.jobId }, orderBy: { step: 'desc' } })
      const { progress } = await tx.fineTuningJob.findUniqueOrThrow({
        where: { id: fence.jobId },
        select: { progress: true },
      })
      return {
        to: 'paused',
        data: {
          // a paused job has no finish to estimate; its place (epoch, step, fraction) stays
          ...(progress ? { progress: { ...(progress as object), estimated_finish: null } } : {}),
          statusReason: last ? `paused by user at step ${last.step}` : 'paused by user',
          workerPid: null,
          trainerPid: null,
          resumeCheckpointId: last?.id ?? null,
        },
        event: {
          level: 'info',
          message: last
            ? `Job paused: checkpoint ${last.id} at step ${last.step} (epoch ${last.epoch}) written; resume continues from it`
            : 'Job paused before its first batch; resume starts it',
          data: { checkpoint: last?.id ?? null, step: last?.step ?? null },
        },
      }
    },
  })
}

/** finish_cancel: the training process stopped after a cancel (or its worker died while cancelling). */
export async function finishCancel(d: LifecycleDeps, fence: Fence, how: string) {
  return apply(d, 'finish_cancel', fence.jobId, {
    fence,
    step: (_tx, row) => ({
      to: 'cancelled',
      data: {
        // an early termination stays one once the process has stopped (the sweep API reads it)
        statusReason: row.statusReason === EARLY_TERMINATED ? EARLY_TERMINATED : `cancelled by user; ${how}`,
        trainerPid: null,
      },
      event: { level: 'info', message: `Job cancelled: ${how}` },
    }),
  })
}

export interface TrainedModel {
  /** the uploaded model directory */
  artifact: { path: string; sha256: string; bytes: number }
  /** the engine's metadata.json */
  metadata: Record<string, unknown>
  trainedSamples: number
  evaluation: Record<string, unknown> | null
  /** the epoch whose weights the engine restored (early stopping), else null */
  bestEpoch: number | null
  backend: string | null
  seconds: number
  /** the `fine-tune-results` file (CSV of the metric rows, bytes already stored): OpenAI's `result_files` */
  resultFile?: Prisma.FileUncheckedCreateInput
}

/**
 * succeed: the artifact row, the fine-tuned model row (keyed by the job: one model per job) with its
 * metrics summary, and the job's success, in one fenced transaction. Returns the model id, or null when
 * this worker no longer owns the job.
 */
export async function succeed(d: LifecycleDeps, fence: Fence, trained: TrainedModel): Promise<string | null> {
  let modelId: string | null = null
  const job = await apply(d, 'succeed', fence.jobId, {
    fence,
    step: async (tx) => {
      const job = await tx.fineTuningJob.findUniqueOrThrow({ where: { id: fence.jobId } })
      const rows = await tx.metric.findMany({
        where: { jobId: job.id, ...EPOCH_ROWS_ONLY },
        select: { step: true, epoch: true, name: true, value: true },
      })
      const es = (job.hyperparameters as { early_stopping?: { monitor: 'val_loss' | 'val_accuracy' } | null })
        .early_stopping
      const metrics = summarizeMetrics(rows, {
        earlyStopping: es ? { monitor: es.monitor, bestEpoch: trained.bestEpoch } : null,
        evaluation: trained.evaluation,
      })
      const metadata = { ...trained.metadata, metrics, backend: trained.backend, seed: job.seed }
      // its id derives from the job's: a replayed success finds it
      if (trained.resultFile)
        await tx.file.upsert({ where: { id: trained.resultFile.id }, create: trained.resultFile, update: {} })
      const artifact = await tx.artifact.create({
        data: {
          id: newId('art'),
          projectId: job.projectId,
          kind: 'model',
          path: trained.artifact.path,
          sha256: trained.artifact.sha256,
          bytes: BigInt(trained.artifact.bytes),
        },
      })
      // One model per job (models.job_id is unique): a replayed success updates it. Its name is short
      // (8 characters of the job id); if another job's model took that name, the whole id is used.
      const existing = await tx.model.findUnique({ where: { jobId: job.id }, select: { id: true } })
      let id = existing?.id ?? fineTunedModelId(job.baseModelId, job.suffix, job.id)
      if (!existing && (await tx.model.findUnique({ where: { id }, select: { id: true } })))
        id = fineTunedModelId(job.baseModelId, job.suffix, job.id, { full: true })
      await tx.model.upsert({
        where: { jobId: job.id },
        create: {
          id,
          projectId: job.projectId,
          kind: 'fine_tuned',
          description: `Fine-tuned from ${job.baseModelId} by ${job.id}`,
          baseModelId: job.baseModelId,
          jobId: job.id,
          trainingFileId: job.trainingFileId,
          artifactId: artifact.id,
          metadata: metadata as object,
        },
        update: { artifactId: artifact.id, metadata: metadata as object, deletedAt: null },
      })
      modelId = id
      const acc = (trained.evaluation as { accuracy?: number } | null)?.accuracy
      return {
        to: 'succeeded',
        data: {
          fineTunedModelId: id,
          trainedSamples: BigInt(trained.trainedSamples),
          progress: { ...((job.progress as object) ?? {}), fraction: 1, estimated_finish: null },
          statusReason: null,
          trainerPid: null,
        },
        event: {
          level: 'info',
          message: `Job succeeded: ${id}${acc !== undefined ? ` (validation accuracy ${acc.toFixed(4)})` : ''}`,
          data: {
            fine_tuned_model: id,
            evaluation: trained.evaluation,
            seconds: Math.round(trained.seconds * 10) / 10,
          },
        },
      }
    },
  })
  return job ? modelId : null
}

// ---------------------------------------------------------------- writes that are not status changes

/**
 * A finished job gives up its model, deleted since (a sweep's losing trial): `fine_tuned_model` becomes
 * null. Not a status change; only while the job still names that model.
 */
export async function forgetModel(d: Pick<LifecycleDeps, 'db'>, jobId: string, modelId: string) {
  await d.db.fineTuningJob.updateMany({
    where: { id: jobId, fineTunedModelId: modelId },
    data: { fineTunedModelId: null },
  })
}

/** The training process's pid (fenced: only the attempt's owner). */
export async function recordTrainerPid(d: Pick<LifecycleDeps, 'db'>, fence: Fence, pid: number | null) {
  await fenced(d.db, fence, (tx) => tx.fineTuningJob.update({ where: { id: fence.jobId }, data: { trainerPid: pid } }))
}

/** The backend the training process proved with its self-test. */
export async function recordBackend(d: LifecycleDeps, fence: Fence, backend: string, selfTest: unknown) {
  await fenced(d.db, fence, async (tx) => {
    await tx.fineTuningJob.update({ where: { id: fence.jobId }, data: { backend } })
    await addJobEvent(tx, fence.jobId, 'info', `Backend ${backend} passed its self-test`, {
      backend,
      self_test: selfTest,
    })
  })
  notifyJobChanged(d.redis, d.config.queuePrefix, fence.jobId)
}

/** The job's `progress` (throttled by the caller). */
export async function recordProgress(d: LifecycleDeps, fence: Fence, progress: Record<string, unknown>) {
  await fenced(d.db, fence, (tx) =>
    tx.fineTuningJob.update({ where: { id: fence.jobId }, data: { progress: progress as object } }),
  )
  notifyJobChanged(d.redis, d.config.queuePrefix, fence.jobId)
}
