// A queued job that no live worker can run would otherwise wait in silence. The API processes check
// periodically, one at a time behind a Redis lease (main.ts starts it; route tests, which run no worker,
// do not): for each resource class with
// queued jobs and no live worker, each such job gets `status_reason` and one warning event. Setting the
// reason and adding the event happen in one conditional update, so with several API processes the event
// is still written once (the lifecycle transition locks the row). When a worker of the class comes back, the reason is cleared (its claim would
// also clear it).

import type { ResourceClass } from '../../config.js'
import * as lifecycle from '../jobs/lifecycle/lifecycle.js'
import { jobResourceClass, liveResourceClasses } from './resource-class.js'

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
    select: { id: true, updatedAt: true, statusReason: true, resourceClass: true },
    take: 1000,
  })
  if (!queued.length) return result
  const live = await liveResourceClasses(d.redis, d.config.queuePrefix)
  const cutoff = Date.now() - opts.graceMs
  for (const job of queued) {
    const rc = jobResourceClass(job, live)
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

const leaseKey = (prefix: string) => `${prefix}:lease:unserved-jobs`

// Takes the lease if it is free, renews it if this owner holds it; true when this owner holds it now.
const LEASE_SCRIPT = `
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0`

/** Whether `owner` holds the Redis lease `key` for the next `ttlMs` (taking or renewing it). */
export async function holdLease(d: Pick<lifecycle.LifecycleDeps, 'redis'>, key: string, owner: string, ttlMs: number) {
  return (await d.redis.eval(LEASE_SCRIPT, 1, key, owner, String(ttlMs))) === 1
}

/**
 * Runs the check every `intervalMs` until stopped, in the one API process that holds the Redis lease
 * (it must run where no worker may be alive, so not on a worker's job scheduler); another process takes
 * over within three intervals of the holder's death. Failures (Redis or PostgreSQL down) are logged and
 * retried.
 */
export function startUnservedJobsCheck(
  d: lifecycle.LifecycleDeps,
  opts: { intervalMs: number; graceMs: number; onPass?: (owner: string) => void },
) {
  let running = false
  const owner = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`
  const timer = setInterval(async () => {
    if (running) return
    running = true
    try {
      if (!(await holdLease(d, leaseKey(d.config.queuePrefix), owner, opts.intervalMs * 3))) return
      opts.onPass?.(owner)
      await checkUnservedJobs(d, opts)
    } catch (err) {
      d.log.warn({ err: (err as Error).message }, 'unserved-jobs check failed')
    } finally {
      running = false
    }
  }, opts.intervalMs)
  timer.unref()
  return {
    stop: () => {
      clearInterval(timer)
      // hand the lease on at once (only if still ours)
      d.redis
        .eval(
          "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
          1,
          leaseKey(d.config.queuePrefix),
          owner,
        )
        .catch(() => {})
    },
  }
}
