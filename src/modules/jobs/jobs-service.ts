import type { FastifyInstance } from 'fastify'
import type { Config } from '../../config.js'
import type { Db } from '../../db/client.js'
import { AppError, notFound } from '../../errors.js'
import type { File, FineTuningJob, Model } from '../../generated/prisma/client.js'
import { checkpointModelId, newId, parseCheckpointModelId } from '../../lib/ids.js'
import { NEWEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
import { cancelChannel, pauseChannel } from '../../queue/catalog.js'
import { enqueueTraining } from '../../queue/enqueue.js'
import type { CreateJobBody } from '../../schemas/jobs.js'
import type { Storage } from '../../storage/storage.js'
import { assertJobSlots, withJobSlotLock } from '../limits/limits-service.js'
import { assertJobFits } from '../limits/memory-budget.js'
import { getModel } from '../models/models-service.js'
import { catalogued, JobFailure, type JobFailureCode } from './failure-codes.js'
import {
  BASE_LEARNING_RATE,
  checkBounds,
  explicitLearningRate,
  type HyperparametersInput,
  resolveHyperparameters,
} from './hyperparameters.js'
import { presentJob } from './job-presenter.js'
import * as lifecycle from './lifecycle/lifecycle.js'
import { isTerminal } from './lifecycle/transitions.js'
import { checkTeacher, type MethodInput, methodHyperparameters, normalizeMethod, type StoredMethod } from './methods.js'

export { TERMINAL } from './lifecycle/transitions.js'

/** What creating a job needs: the API app has it, and so do the worker's deps (a sweep's trials are created there). */
export type JobServiceDeps = lifecycle.LifecycleDeps & { storage: Storage; config: Config }
export type { CreateJobBody }
export { presentJob }

async function findFile(
  db: Db,
  projectId: string,
  id: string,
  param: 'training_file' | 'validation_file',
): Promise<File> {
  const f = await db.file.findFirst({ where: { id, projectId, deletedAt: null } })
  // OpenAI answers 400 here, not 404; missing, deleted and another project's files answer alike.
  const code = param === 'training_file' ? 'invalid_training_file' : 'invalid_validation_file'
  if (!f)
    throw new AppError(code, `No file with id '${id}' in this project: upload it first (purpose fine-tune).`, { param })
  if (f.purpose !== 'fine-tune')
    throw new AppError(code, `File ${id} has purpose ${f.purpose}; a ${param} must be a fine-tune dataset.`, { param })
  if (f.status === 'error')
    throw new AppError(
      'file_not_ready',
      `File ${id} failed validation: ${(f.statusDetails as { message?: string })?.message ?? 'see the file'}`,
      {
        param,
      },
    )
  return f
}

/** Refuses a base model that cannot take the file's samples, with the reason. */
export function checkCompatible(model: Model, file: File, param = 'training_file') {
  const meta = model.metadata as { input_shape?: number[] | null; inputs?: 'image' | 'tabular' | 'any' }
  const stats = file.stats as { image_shape?: number[]; feature_count?: number } | null
  if (!stats) return
  // Presets are sized from the data; some only take images.
  if (model.kind === 'architecture') {
    if (meta.inputs === 'image' && !stats.image_shape)
      throw new AppError(
        'incompatible_dataset',
        `${model.id} is a convolutional preset and needs images; ${file.id} is tabular.`,
        {
          param,
        },
      )
    return
  }
  if (!meta.input_shape) return
  const imageModel = meta.input_shape.length === 3
  if (imageModel && !stats.image_shape)
    throw new AppError(
      'incompatible_dataset',
      `${model.id} takes images of shape [${meta.input_shape}], but ${file.id} is tabular (${stats.feature_count} features).`,
      { param },
    )
  if (!imageModel && stats.feature_count !== meta.input_shape[0])
    throw new AppError(
      'incompatible_dataset',
      `${model.id} takes ${meta.input_shape[0]} features per row, but ${file.id} has ${stats.feature_count ?? 'images'}.`,
      { param },
    )
}

/**
 * Everything a new job would be, checked and resolved ("auto" values included when the files are
 * processed), without writing anything: createJob persists it, `?dry_run=true` answers it.
 */
export async function resolveJob(app: JobServiceDeps, projectId: string, body: CreateJobBody) {
  if (body.integrations?.length)
    throw new AppError(
      'integrations_not_supported',
      'Refit has no integrations (such as wandb); follow a job through its events, metrics and checkpoints, and send integrations as [] or null.',
      { param: 'integrations' },
    )
  // `model` may name a checkpoint of one of the project's jobs (by `ftckpt-` id or by its
  // `ft:…:ckpt-step-N` name): the new job starts from its weights.
  const checkpoint = await findCheckpoint(app.db, projectId, body.model)
  const modelId = checkpoint ? checkpoint.job.baseModelId : body.model
  const model = await getModel(app.db, projectId, modelId).catch((err) => {
    if (err instanceof AppError && err.code === 'not_found') throw notFound('model', body.model, 'model')
    throw err
  })
  // OpenAI's legacy form (no `method`, top-level hyperparameters) must work on every model: presets have
  // nothing pretrained to transfer from, so they train supervised; everything else transfers.
  const method: MethodInput = body.method ?? { type: model.kind === 'architecture' ? 'supervised' : 'transfer' }
  const hpParam = body.method ? `method.${method.type}.hyperparameters` : 'hyperparameters'
  const hpInput: HyperparametersInput = { ...(body.hyperparameters ?? {}), ...methodHyperparameters(method) }
  checkBounds(hpInput, hpParam)
  const learningRate = explicitLearningRate(hpInput) ?? BASE_LEARNING_RATE
  const { stored, teacher } = await normalizeMethod(app.db, projectId, method, model, learningRate)

  const training = await findFile(app.db, projectId, body.training_file, 'training_file')
  const validation = body.validation_file
    ? await findFile(app.db, projectId, body.validation_file, 'validation_file')
    : null
  const ready = training.status === 'processed' && (!validation || validation.status === 'processed')
  if (training.status === 'processed') {
    checkCompatible(model, training)
    if (teacher) {
      checkCompatible(teacher, training)
      checkTeacher(teacher, training)
    }
  }
  if (validation?.status === 'processed') checkCompatible(model, validation, 'validation_file')

  const rows = (training.stats as { rows?: number } | null)?.rows ?? 0
  const resolved = ready ? resolveHyperparameters(hpInput, rows, !!validation) : null
  // refused before queueing when one training process could not hold it (a job still waiting for its
  // files is checked when they are validated)
  const estimate = resolved
    ? await assertJobFits(app, { model, teacher, method: stored, hyperparameters: resolved, training, validation })
    : null
  return {
    checkpoint,
    ready,
    estimate,
    data: {
      projectId,
      baseModelId: model.id,
      trainingFileId: training.id,
      validationFileId: validation?.id ?? null,
      method: stored as object,
      hyperparameters: (resolved ?? hpInput) as object,
      seed: body.seed ?? Math.floor(Math.random() * 2 ** 31),
      suffix: body.suffix ?? null,
      userMetadata: body.metadata ?? null,
      status: (ready ? 'queued' : 'validating_files') as FineTuningJob['status'],
      initCheckpointId: checkpoint?.id ?? null,
      resourceClass: body.resource_class ?? 'auto',
    },
  }
}

/**
 * The job `body` would create, as the API would show it, without creating it: id empty, status what it
 * would start in, "auto" values resolved when the files are processed. The project's job slots are checked
 * too, so a form learns of a full project before it submits.
 */
export async function previewJob(app: FastifyInstance, projectId: string, body: CreateJobBody) {
  const { data } = await resolveJob(app, projectId, body)
  await assertJobSlots(app, projectId)
  const now = new Date()
  const unset = { startedAt: null, finishedAt: null, fineTunedModelId: null, statusReason: null, trainedSamples: null }
  const row = {
    ...unset,
    ...{ errorCode: null, errorMessage: null, errorParam: null, progress: null, backend: null, retryOfJobId: null },
    ...data,
    id: '',
    attempt: 0,
    createdAt: now,
    updatedAt: now,
  } as unknown as FineTuningJob
  return presentJob(row)
}

export async function createJob(
  app: JobServiceDeps,
  projectId: string,
  body: CreateJobBody,
  opts: { retryOf?: string; sweep?: { id: string; trial: number; values: Record<string, unknown> } } = {},
) {
  const { checkpoint, ready, estimate, data } = await resolveJob(app, projectId, body)
  const id = newId('ftjob')
  const { status: _status, ...row } = data
  const from = checkpoint ? ` from checkpoint ${checkpoint.id} (epoch ${checkpoint.epoch} of ${checkpoint.jobId})` : ''
  // the count and the insert as one step per project (exact under simultaneous creates)
  return withJobSlotLock(app, projectId, async () => {
    await assertJobSlots(app, projectId)
    return lifecycle.createJob(
      app,
      {
        ...row,
        id,
        userMetadata: body.metadata ?? undefined,
        retryOfJobId: opts.retryOf ?? null,
        ...(opts.sweep
          ? { sweepId: opts.sweep.id, sweepTrial: opts.sweep.trial, sweepValues: opts.sweep.values as object }
          : {}),
      },
      {
        ready,
        message: `Created ${(data.method as StoredMethod).type} job ${id}${from}${opts.retryOf ? ` as a retry of ${opts.retryOf}` : ''}${opts.sweep ? ` as trial ${opts.sweep.trial + 1} of sweep ${opts.sweep.id}` : ''}`,
        data: estimate
          ? { memory_estimate_bytes: estimate.totalBytes, memory_limit_bytes: app.config.trainingMemoryBytes }
          : undefined,
      },
    )
  })
}

/** The checkpoint `model` names, by `ftckpt-` id or `ft:…:ckpt-step-N` name; null when it names no checkpoint. */
async function findCheckpoint(db: Db, projectId: string, model: string) {
  if (model.startsWith('ftckpt-')) {
    const ckpt = await db.checkpoint.findFirst({ where: { id: model, job: { projectId } }, include: { job: true } })
    if (!ckpt) throw notFound('checkpoint', model, 'model')
    return ckpt
  }
  const name = parseCheckpointModelId(model)
  if (!name) return null
  const candidates = await db.checkpoint.findMany({
    where: { step: name.step, job: { projectId, id: { startsWith: `ftjob-${name.shortId}` } } },
    include: { job: true },
  })
  const ckpt = candidates.find((c) => checkpointModelId(c.job.baseModelId, c.job.suffix, c.job.id, c.step) === model)
  if (!ckpt) throw notFound('checkpoint', model, 'model')
  return ckpt
}

/**
 * Retries a failed or cancelled job as a new job with the same model, files, method, seed, suffix and
 * metadata (the same seed makes it reproducible); `retry_of_job_id` links them.
 */
export async function retryJob(app: FastifyInstance, projectId: string, id: string) {
  const source = await getJob(app.db, projectId, id)
  if (source.status !== 'failed' && source.status !== 'cancelled')
    throw new AppError(
      'job_not_retryable',
      `Job ${id} is ${source.status}; only failed or cancelled jobs can be retried.`,
    )
  const stored = source.method as unknown as StoredMethod
  const config = (stored as Record<string, unknown>)[stored.type] as Record<string, unknown>
  return createJob(
    app,
    projectId,
    {
      model: source.initCheckpointId ?? source.baseModelId,
      training_file: source.trainingFileId,
      validation_file: source.validationFileId ?? undefined,
      method: {
        type: stored.type,
        // the echoed multiplier is derived from learning_rate: passing both back would be refused
        [stored.type]: { ...config, hyperparameters: withoutMultiplier(source.hyperparameters) },
      } as MethodInput,
      seed: source.seed,
      resource_class: source.resourceClass,
      suffix: source.suffix ?? undefined,
      metadata: (source.userMetadata as Record<string, string> | null) ?? undefined,
    },
    { retryOf: source.id },
  )
}

function withoutMultiplier(hp: unknown): HyperparametersInput {
  const { learning_rate_multiplier: _, ...rest } = hp as HyperparametersInput
  return typeof rest.learning_rate === 'number' || _ === undefined ? rest : (hp as HyperparametersInput)
}

/** 1-based place in the training queue (all projects share the workers), or null when not queued. */
export async function queuePosition(db: Db, job: FineTuningJob): Promise<number | null> {
  if (job.status !== 'queued') return null
  const ahead = await db.fineTuningJob.count({
    where: {
      status: 'queued',
      OR: [{ createdAt: { lt: job.createdAt } }, { createdAt: job.createdAt, id: { lt: job.id } }],
    },
  })
  return ahead + 1
}

/** Enqueues a training job (see queue/enqueue.ts); kept for callers that hold the app. */
export async function enqueueJob(app: FastifyInstance, job: FineTuningJob) {
  await enqueueTraining(app, job)
}

/** A `metadata[<key>]` query parameter, as OpenAI's SDKs send the `metadata` filter of `jobs.list`. */
export const METADATA_QUERY_KEY = /^metadata\[([^\]]{1,64})\]$/

export async function listJobs(app: FastifyInstance, projectId: string, query: Page & Record<string, unknown>) {
  const limit = query.limit ?? 20
  const cursor = query.after ? await app.db.fineTuningJob.findFirst({ where: { id: query.after, projectId } }) : null
  const metadata = Object.entries(query).flatMap(([k, v]) => {
    const key = METADATA_QUERY_KEY.exec(k)?.[1]
    return key === undefined ? [] : [{ userMetadata: { path: [key], equals: String(v) } }]
  })
  const rows = await app.db.fineTuningJob.findMany({
    where: { projectId, ...olderThan(cursor), ...(metadata.length ? { AND: metadata } : {}) },
    orderBy: NEWEST_FIRST,
    take: limit + 1,
  })
  return toList(rows, limit, presentJob)
}

export async function getJob(db: Db, projectId: string, id: string) {
  const job = await db.fineTuningJob.findFirst({ where: { id, projectId } })
  if (!job) throw notFound('fine-tuning job', id)
  return job
}

/**
 * A waiting job is cancelled at once and leaves the queue; a running one becomes `cancelling` and every
 * worker hears about it on Redis, so the one that owns it stops at the end of the current batch.
 */
export async function cancelJob(app: FastifyInstance, projectId: string, id: string) {
  const job = await getJob(app.db, projectId, id)
  if (isTerminal(job.status)) throw new AppError('job_not_cancellable', `Job ${id} has already ${job.status}.`)
  const applied = await lifecycle.cancelByUser(app, id)
  if (applied !== 'cancel') {
    // Re-broadcast on repeated calls too: harmless, and it covers a publish lost while Redis blinked.
    await app.redis.publish(cancelChannel(app.config.queuePrefix), id).catch((err) => {
      app.log.warn({ err: err.message, jobId: id }, 'cancel broadcast failed; the worker also polls the database')
    })
  }
  return getJob(app.db, projectId, id)
}

/**
 * Pause: a waiting job is paused at once and leaves the queue; a running one stays `running` with
 * status_reason "pausing" and every worker hears about it on Redis, so the one that owns it writes a
 * mid-epoch checkpoint at the end of the current batch and stops (then the job is `paused`). Pausing a
 * paused or pausing job again changes nothing.
 */
export async function pauseJob(app: FastifyInstance, projectId: string, id: string) {
  const job = await getJob(app.db, projectId, id)
  if (isTerminal(job.status) || job.status === 'cancelling')
    throw new AppError(
      'job_not_pausable',
      `Job ${id} is ${job.status}; only validating_files, queued or running jobs can be paused.`,
    )
  if (job.status === 'paused') return job
  const applied = await lifecycle.pauseByUser(app, id)
  const now = await getJob(app.db, projectId, id)
  if (applied === null && now.status !== 'paused' && now.statusReason !== lifecycle.PAUSING)
    // it moved meanwhile (finished, or cancelled): answer as if it had been in that status
    throw new AppError('job_not_pausable', `Job ${id} is ${now.status}; it can no longer be paused.`)
  if (now.status === 'running') {
    // Re-broadcast on repeated calls too, as cancel does; the worker also polls the database.
    await app.redis.publish(pauseChannel(app.config.queuePrefix), id).catch((err) => {
      app.log.warn({ err: err.message, jobId: id }, 'pause broadcast failed; the worker also polls the database')
    })
  }
  return now
}

/**
 * Resume: a paused job is queued again and continues from its last checkpoint (a job paused while its
 * files were validated waits for them again, and is queued at once when they already are).
 */
export async function resumeJob(app: FastifyInstance, projectId: string, id: string) {
  const job = await getJob(app.db, projectId, id)
  if (job.status !== 'paused')
    throw new AppError('job_not_paused', `Job ${id} is ${job.status}; only a paused job can be resumed.`)
  const resumed = await lifecycle.resume(app, id)
  if (!resumed) {
    const now = await getJob(app.db, projectId, id)
    throw new AppError('job_not_paused', `Job ${id} is ${now.status}; only a paused job can be resumed.`)
  }
  if (resumed.status === 'validating_files') {
    await promoteJobsWaitingOn(app, resumed.trainingFileId)
    return getJob(app.db, projectId, id)
  }
  // the row as the transition left it (`queued`): a worker may claim it before a re-read would run
  return resumed
}

/**
 * Called when a file's validation ends: jobs that waited in `validating_files` are queued (with their
 * hyperparameters resolved from the now known row count) or failed with the file's error.
 */
/** The lifecycle's deps, plus storage and limits to estimate the job's memory once its files are known. */
type PromoteDeps = lifecycle.LifecycleDeps & {
  storage: Storage
  config: Pick<Config, 'trainingMemoryBytes' | 'inferenceMemoryBytes'>
}

export async function promoteJobsWaitingOn(deps: PromoteDeps, fileId: string) {
  const waiting = await deps.db.fineTuningJob.findMany({
    where: { status: 'validating_files', OR: [{ trainingFileId: fileId }, { validationFileId: fileId }] },
  })
  for (const job of waiting) {
    const files = await deps.db.file.findMany({
      where: { id: { in: [job.trainingFileId, job.validationFileId].filter((x): x is string => !!x) } },
    })
    const training = files.find((f) => f.id === job.trainingFileId)!
    const validation = files.find((f) => f.id === job.validationFileId) ?? null
    const failed = [training, validation].find((f) => f?.status === 'error')
    let error: { code: JobFailureCode; message: string; param?: string | null } | null = null
    if (failed) {
      const detail = failed.statusDetails as { message?: string } | null
      error = {
        code: 'file_not_ready',
        message: `File ${failed.id} failed validation: ${detail?.message ?? 'see the file'}`,
        param: failed.id === training.id ? 'training_file' : 'validation_file',
      }
    } else if (training.status !== 'processed' || (validation && validation.status !== 'processed')) {
      continue // the other file is still being validated
    } else {
      const model = await deps.db.model.findUnique({ where: { id: job.baseModelId } })
      try {
        if (!model) throw new JobFailure('base_model_missing', `Model ${job.baseModelId} no longer exists.`, 'model')
        checkCompatible(model, training)
        if (validation) checkCompatible(model, validation, 'validation_file')
        const stored = job.method as unknown as StoredMethod
        let teacher: Model | null = null
        if (stored.type === 'distillation') {
          teacher = await deps.db.model.findUnique({ where: { id: stored.distillation.teacher_model } })
          if (!teacher)
            throw new JobFailure(
              'teacher_model_missing',
              `Teacher ${stored.distillation.teacher_model} no longer exists.`,
            )
          checkCompatible(teacher, training)
          checkTeacher(teacher, training)
        }
        const hp = resolveHyperparameters(
          job.hyperparameters as HyperparametersInput,
          (training.stats as { rows: number }).rows,
          !!validation,
        )
        await assertJobFits(deps, { model, teacher, method: stored, hyperparameters: hp, training, validation })
      } catch (err) {
        if (err instanceof JobFailure) error = err
        // the creation-time checks, now with the files known: each of their codes is catalogued
        else if (err instanceof AppError) error = { code: catalogued(err.code), message: err.message, param: err.param }
        else throw err
      }
    }
    if (error) {
      await lifecycle.reject(deps, job.id, { code: error.code, message: error.message, param: error.param })
      continue
    }
    const hp = resolveHyperparameters(
      job.hyperparameters as HyperparametersInput,
      (training.stats as { rows: number }).rows,
      !!validation,
    )
    await lifecycle.promote(deps, job.id, hp as unknown as Record<string, unknown>)
  }
}
