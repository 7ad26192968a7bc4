// Validates an uploaded dataset: `uploaded` -> `processed` (format and stats recorded) or `error`
// (code, message and the lines or entries at fault recorded; the bytes deleted). Then it releases the
// jobs that were waiting for this file.
//
// Fairness: one validation per project at a time across all workers (a project slot in Redis); a second
// upload of the same project goes back to delayed, so one tenant's 60,000-entry zip cannot hold every
// worker's validation slots. Poison: a file whose validation throws an unexpected error on every attempt
// ends `error` (`validation_failed`) on the last one, and the jobs waiting on it fail, instead of staying
// `uploaded` forever.
import { DelayedError, type Job } from 'bullmq'
import { DatasetValidationError, validateDataset } from '../src/datasets/index.js'
import type { DatasetFormat } from '../src/datasets/types.js'
import { promoteJobsWaitingOn } from '../src/modules/jobs/jobs-service.js'
import { FILE_JOB_OPTIONS, parseFilePayload } from '../src/queue/catalog.js'
import { slotKey, slotRetryDelayMs, takeSlot } from '../src/queue/project-slots.js'
import type { WorkerDeps } from './deps.js'

export function createFileProcessor(deps: WorkerDeps) {
  return async (job: Job, token?: string) => {
    const { fileId } = parseFilePayload(job.data)
    const file = await deps.db.file.findUnique({ where: { id: fileId } })
    if (!file || file.deletedAt || file.status !== 'uploaded' || !file.storagePath) return { skipped: true }
    const slot = await takeSlot(deps.redis, slotKey(deps.config.queuePrefix, 'files', file.projectId), fileId, 1)
    if (!slot) {
      // Another validation of this project is running: wait behind it without holding a worker slot.
      await job.moveToDelayed(Date.now() + slotRetryDelayMs(), token)
      throw new DelayedError()
    }
    try {
      await validate(job, file)
    } finally {
      await slot.release()
    }
    await promoteJobsWaitingOn(deps, fileId)
    return { ok: true }
  }

  async function validate(job: Job, file: NonNullable<Awaited<ReturnType<typeof deps.db.file.findUnique>>>) {
    const fileId = file.id
    const storagePath = file.storagePath as string
    const started = Date.now()
    try {
      const { format, stats } = await validateDataset(await deps.storage.localPath(storagePath), {
        format: (file.format as DatasetFormat | null) ?? undefined,
        labelColumn: file.labelColumn ?? undefined,
        limits: {
          maxImagePixels: deps.config.maxImagePixels,
          maxClasses: deps.config.maxClasses,
          maxLabelChars: deps.config.maxLabelChars,
        },
      })
      await deps.db.file.update({
        where: { id: fileId },
        data: { status: 'processed', format, stats: stats as object, statusDetails: undefined },
      })
      deps.log.info({ fileId, format, rows: stats.rows, ms: Date.now() - started }, 'file validated')
    } catch (err) {
      const attempts = job.opts?.attempts ?? FILE_JOB_OPTIONS.attempts ?? 1
      const lastAttempt = (job.attemptsMade ?? 0) + 1 >= attempts
      // Unexpected errors retry with backoff (a blip of storage or the database); on the last attempt the
      // file itself is the likely cause, and it is rejected like any invalid dataset.
      if (!(err instanceof DatasetValidationError) && !lastAttempt) throw err
      const details =
        err instanceof DatasetValidationError
          ? { code: err.code, message: err.message, details: err.details }
          : {
              code: 'validation_failed',
              message: `Validation failed on each of ${attempts} attempts; the file could not be read. Check it opens locally, or upload it again.`,
              details: [],
            }
      // bytes first: a crash in between then leaves a row pointing at nothing (the retry rejects it), never
      // bytes no row points at; and a client that sees `error` finds nothing left behind
      await deps.storage.remove(storagePath)
      await deps.db.file.update({
        where: { id: fileId },
        data: { status: 'error', statusDetails: details as object, storagePath: null },
      })
      deps.log.info(
        { fileId, code: details.code, err: err instanceof DatasetValidationError ? undefined : (err as Error).message },
        'file rejected',
      )
    }
  }
}
