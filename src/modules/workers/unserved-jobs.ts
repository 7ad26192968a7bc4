// A queued job that no live worker can run would otherwise wait in silence. Every API process checks
// periodically (main.ts starts it; route tests, which run no worker, do not): for each resource class with
// queued jobs and no live worker, each such job gets `status_reason` and one warning event. Setting the
// reason and adding the event happen in one conditional update, so with several API processes the event
// is still written once (the lifecycle transition locks the row). When a worker of the class comes back, the reason is cleared (its claim would
// also clear it).

import type { ResourceClass } from '../../config.js'
import * as lifecycle from '../jobs/lifecycle/lifecycle.js'
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
export async function checkUnservedJobs(d: lifecycle.LifecycleDeps, opts: { graceMs: number }): Promise<UnservedCheck> {
  const result: UnservedCheck = { flagged: [], cleared: [] }
  const queued = await d.db.fineTuningJob.findMany({
    where: { status: 'queued' },
    select: { id: true, updatedAt: true, statusReason: true },
    take: 1000,
  })
  if (!queued.length) return result
  const workers = (await listWorkers(d.redis, d.config.queuePrefix)).filter((w) => isAlive(w))
  const live = new Set(workers.map((w) => w.resource_class))
  const cutoff = Date.now() - opts.graceMs
  for (const job of queued) {
    const rc = jobResourceClass(job)
    const reason = noWorkerReason(rc)
    if (live.has(rc)) {
      if (job.statusReason === reason && (await lifecycle.clearUnserved(d, job.id, reason))) result.cleared.push(job.id)
      continue
    }
    if (job.statusReason === reason || job.updatedAt.getTime() > cutoff) continue
    if (await lifecycle.flagUnserved(d, job.id, reason, rc)) result.flagged.push(job.id)
  }
  return result
}

/** Runs the check every `intervalMs` until stopped; failures (Redis or PostgreSQL down) are logged and retried. */
export function startUnservedJobsCheck(d: lifecycle.LifecycleDeps, opts: { intervalMs: number; graceMs: number }) {
  let running = false
  const timer = setInterval(async () => {
    if (running) return
    running = true
    try {
      await checkUnservedJobs(d, opts)
    } catch (err) {
      d.log.warn({ err: (err as Error).message }, 'unserved-jobs check failed')
    } finally {
      running = false
    }
  }, opts.intervalMs)
  timer.unref()
  return { stop: () => clearInterval(timer) }
}
