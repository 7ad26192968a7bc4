// The webhook outbox: a terminal transition writes one pending `webhook_deliveries` row per subscribed
// webhook in its own transaction, so a job that finished is always announced (at least once) and never
// announced for a status it did not commit. After the commit the lifecycle hands the new rows' ids to the
// relay (enqueue.ts), which adds one BullMQ delivery job per row; the reconciler re-adds any it missed.
import type { FineTuningJob, Prisma } from '../../../generated/prisma/client.js'
import { newId, unixSeconds } from '../../../lib/ids.js'
import { presentJob } from '../job-presenter.js'
import { isTerminal } from './transitions.js'

type Tx = Pick<Prisma.TransactionClient, 'webhook' | 'webhookDelivery'>

/**
 * Records one pending delivery per webhook of the job's project that subscribes to its (terminal)
 * status and existed when it finished. Idempotent (unique on webhook, job, event). Returns the ids of
 * the rows it created.
 */
export async function recordDeliveries(tx: Tx, job: FineTuningJob): Promise<string[]> {
  if (!isTerminal(job.status)) return []
  const finishedAt = job.finishedAt ?? job.updatedAt
  const webhooks = await tx.webhook.findMany({
    where: { projectId: job.projectId, deletedAt: null, events: { has: job.status }, createdAt: { lte: finishedAt } },
    select: { id: true },
  })
  if (!webhooks.length) return []
  const existing = await tx.webhookDelivery.findMany({
    where: { jobId: job.id, event: job.status, webhookId: { in: webhooks.map((w) => w.id) } },
    select: { webhookId: true },
  })
  const done = new Set(existing.map((e) => e.webhookId))
  const data = presentJob(job)
  const createdAt = new Date()
  const rows = webhooks
    .filter((w) => !done.has(w.id))
    .map((w) => {
      const id = newId('whdel')
      const payload = {
        id,
        object: 'event',
        type: `fine_tuning.job.${job.status}`,
        created_at: unixSeconds(createdAt)!,
        data,
      }
      return { id, webhookId: w.id, jobId: job.id, event: job.status, payload: payload as object, createdAt }
    })
  if (!rows.length) return []
  // skipDuplicates: a concurrent recorder (the reconciler's sweep) may have written the same (webhook, job, event).
  await tx.webhookDelivery.createMany({ data: rows, skipDuplicates: true })
  const written = await tx.webhookDelivery.findMany({
    where: { id: { in: rows.map((r) => r.id) } },
    select: { id: true },
  })
  return written.map((w) => w.id)
}
