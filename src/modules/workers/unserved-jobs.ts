// A queued job that no live worker can run would otherwise wait in silence. Every API process checks
// periodically (main.ts starts it; route tests, which run no worker, do not): for each resource class with
// queued jobs and no live worker, each such job gets `status_reason` and one warning event. Setting the
// reason and adding the event happen in one conditional update, so with several API processes the event
// is still written once. When a worker of the class comes back, the reason is cleared (its claim would
// also clear it).
import type { Redis } from 'ioredis'
import type { ResourceClass } from '../../config.js'
import type { Db } from '../../db/client.js'
import { addJobEvent } from '../jobs/job-events.js'
import { jobResourceClass } from './resource-class.js'
import { isAlive, listWorkers } from './worker-registry.js'

export const noWorkerReason = (rc: ResourceClass) => `no live ${rc} worker: the job waits until one starts`

export interface UnservedCheck {
  /** jobs newly told that no worker can run them */
  flagged: string[]
  /** jobs whose reason was cleared because a worker is back */
  cleared: string[]
}

/** One pass; `graceMs`: jobs queued more recently are left alone (a worker may be starting). */
export async function checkUnservedJobs(
  db: Db,
  redis: Redis,
  prefix: string,
  opts: { graceMs: number; notify?: (jobId: string) => void },
): Promise<UnservedCheck> {
  const result: UnservedCheck = { flagged: [], cleared: [] }
  const queued = await db.fineTuningJob.findMany({
    where: { status: 'queued' },
    select: { id: true, updatedAt: true, statusReason: true },
    take: 1000,
  })
  if (!queued.length) return result
  const workers = (await listWorkers(redis, prefix)).filter((w) => isAlive(w))
  const live = new Set(workers.map((w) => w.resource_class))
  const cutoff = Date.now() - opts.graceMs
  for (const job of queued) {
    const rc = jobResourceClass(job)
    const reason = noWorkerReason(rc)
    if (live.has(rc)) {
      if (job.statusReason === reason) {
        const r = await db.fineTuningJob.updateMany({
          where: { id: job.id, status: 'queued', statusReason: reason },
          data: { statusReason: null },
        })
        if (r.count) {
          result.cleared.push(job.id)
          opts.notify?.(job.id)
        }
      }
      continue
    }
    if (job.statusReason === reason || job.updatedAt.getTime() > cutoff) continue
    const flagged = await db.$transaction(async (tx) => {
      const r = await tx.fineTuningJob.updateMany({
        where: { id: job.id, status: 'queued', OR: [{ statusReason: null }, { statusReason: { not: reason } }] },
        data: { statusReason: reason },
      })
      if (r.count)
        await addJobEvent(tx, job.id, 'warn', `No live ${rc} worker is registered: the job waits until one starts`, {
          resource_class: rc,
        })
      return r.count > 0
    })
    if (flagged) {
      result.flagged.push(job.id)
      opts.notify?.(job.id)
    }
  }
  return result
}

/** Runs the check every `intervalMs` until stopped; failures (Redis or PostgreSQL down) are logged and retried. */
export function startUnservedJobsCheck(
  db: Db,
  redis: Redis,
  prefix: string,
  opts: {
    intervalMs: number
    graceMs: number
    notify?: (jobId: string) => void
    log: { warn(o: object, m?: string): void }
  },
) {
  let running = false
  const timer = setInterval(async () => {
    if (running) return
    running = true
    try {
      await checkUnservedJobs(db, redis, prefix, opts)
    } catch (err) {
      opts.log.warn({ err: (err as Error).message }, 'unserved-jobs check failed')
    } finally {
      running = false
    }
  }, opts.intervalMs)
  timer.unref()
  return { stop: () => clearInterval(timer) }
}
