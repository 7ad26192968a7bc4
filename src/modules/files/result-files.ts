// OpenAI's `result_files`: a succeeded job's metric rows as a CSV file (purpose `fine-tune-results`),
// readable through GET /v1/files/{id}/content like any file. Written by the worker when the job succeeds.
import type { Prisma } from '../../generated/prisma/client.js'
import { resultFileId } from '../../lib/ids.js'
import type { Storage } from '../../storage/storage.js'

export const RESULTS_PURPOSE = 'fine-tune-results'

/** One line per step: `step,epoch,<metric names in a stable order>`; a metric a step lacks is empty. */
export function metricsCsv(rows: { step: number; epoch: number; name: string; value: number }[]): string {
  const known = ['loss', 'accuracy', 'val_loss', 'val_accuracy']
  const names = [...new Set(rows.map((r) => r.name))].sort(
    (a, b) => (known.indexOf(a) + 1 || 99) - (known.indexOf(b) + 1 || 99) || a.localeCompare(b),
  )
  const steps = new Map<number, { epoch: number; values: Map<string, number> }>()
  for (const r of rows) {
    const s = steps.get(r.step) ?? { epoch: r.epoch, values: new Map() }
    s.values.set(r.name, r.value)
    steps.set(r.step, s)
  }
  const lines = [['step', 'epoch', ...names].join(',')]
  for (const [step, s] of [...steps].sort((a, b) => a[0] - b[0]))
    lines.push([step, s.epoch, ...names.map((n) => s.values.get(n) ?? '')].join(','))
  return `${lines.join('\n')}\n`
}

/**
 * Stores the CSV (under a key fixed by the job id, so a retried write overwrites rather than orphans) and
 * returns the file row (its id derived from the job's) to create in the transaction that marks the job succeeded.
 */
/** Where a job's result file is stored. */
export const resultFileKey = (jobId: string) => `results/${jobId}.csv`

export async function storeResultFile(
  storage: Storage,
  job: { id: string; projectId: string },
  rows: { step: number; epoch: number; name: string; value: number }[],
  /** reserves the file's bytes in the project's storage quota; called before they are written */
  reserve: (bytes: number) => Promise<void>,
): Promise<Prisma.FileUncheckedCreateInput> {
  const key = resultFileKey(job.id)
  const csv = metricsCsv(rows)
  await reserve(Buffer.byteLength(csv))
  const stored = await storage.put(key, csv)
  return {
    id: resultFileId(job.id),
    projectId: job.projectId,
    filename: `${job.id}-results.csv`,
    purpose: RESULTS_PURPOSE,
    format: 'csv',
    status: 'processed',
    bytes: BigInt(stored.bytes),
    sha256: stored.sha256,
    storagePath: key,
  }
}
