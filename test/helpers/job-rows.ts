// A job row (and the processed CSV file it names) written straight to PostgreSQL, for tests about what
// happens around a job — streams, webhooks, fairness — rather than its training. No worker runs it.
import type { Db } from '../../src/db/client.js'
import type { JobStatus } from '../../src/generated/prisma/client.js'
import { newId } from '../../src/lib/ids.js'

export async function insertJobRow(
  db: Db,
  projectId: string,
  status: JobStatus,
  opts: { finishedAt?: Date; statusReason?: string } = {},
): Promise<string> {
  const fileId = newId('file')
  await db.file.create({
    data: {
      id: fileId,
      projectId,
      filename: 'data.csv',
      purpose: 'fine-tune',
      format: 'csv',
      bytes: 10n,
      sha256: '0'.repeat(64),
      status: 'processed',
      stats: { rows: 2, feature_count: 2 },
    },
  })
  const id = newId('ftjob')
  const started = status !== 'queued' && status !== 'validating_files'
  const finished = ['succeeded', 'failed', 'cancelled'].includes(status)
  await db.fineTuningJob.create({
    data: {
      id,
      projectId,
      baseModelId: 'mnist-cnn',
      trainingFileId: fileId,
      method: { type: 'transfer' },
      hyperparameters: { n_epochs: 1, batch_size: 16, learning_rate: 0.001, validation_split: 0 },
      seed: 1,
      status,
      startedAt: started ? new Date() : null,
      finishedAt: finished ? (opts.finishedAt ?? new Date()) : null,
      statusReason: opts.statusReason ?? null,
    },
  })
  return id
}
