// Validates an uploaded dataset: `uploaded` -> `processed` (format and stats recorded) or `error`
// (code, message and the lines or entries at fault recorded; the bytes deleted). Then it releases the
// jobs that were waiting for this file.
import type { Job } from 'bullmq'
import { DatasetValidationError, validateDataset } from '../src/datasets/index.js'
import type { DatasetFormat } from '../src/datasets/types.js'
import { promoteJobsWaitingOn } from '../src/modules/jobs/jobs-service.js'
import { parseFilePayload } from '../src/queue/catalog.js'
import type { WorkerDeps } from './deps.js'

export function createFileProcessor(deps: WorkerDeps) {
  return async (job: Job) => {
    const { fileId } = parseFilePayload(job.data)
    const file = await deps.db.file.findUnique({ where: { id: fileId } })
    if (!file || file.deletedAt || file.status !== 'uploaded' || !file.storagePath) return { skipped: true }
    const started = Date.now()
    try {
      const { format, stats } = await validateDataset(await deps.storage.localPath(file.storagePath), {
        format: (file.format as DatasetFormat | null) ?? undefined,
        labelColumn: file.labelColumn ?? undefined,
      })
      await deps.db.file.update({
        where: { id: fileId },
        data: { status: 'processed', format, stats: stats as object, statusDetails: undefined },
      })
      deps.log.info({ fileId, format, rows: stats.rows, ms: Date.now() - started }, 'file validated')
    } catch (err) {
      if (!(err instanceof DatasetValidationError)) throw err // infrastructure: BullMQ retries with backoff
      await deps.db.file.update({
        where: { id: fileId },
        data: {
          status: 'error',
          statusDetails: { code: err.code, message: err.message, details: err.details } as object,
          storagePath: null,
        },
      })
      await deps.storage.remove(file.storagePath)
      deps.log.info({ fileId, code: err.code }, 'file rejected')
    }
    await promoteJobsWaitingOn(deps, fileId)
    return { ok: true }
  }
}
