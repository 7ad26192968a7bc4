// Per-project limits: stored dataset bytes and unfinished jobs. The server defaults come from the
// config; a project's own `storageQuotaBytes` / `maxConcurrentJobs` override them (set through
// PATCH /v1/admin/projects/{id}). Both are exact under concurrency: uploads reserve their bytes first
// (storage-reservation.ts), and job creation counts and inserts under a per-project lock (withJobSlotLock).
import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../../config.js'
import { AppError, notFound } from '../../errors.js'
import type { Prisma } from '../../generated/prisma/client.js'
import { featureBytes } from '../features/feature-cache-service.js'

/** The database or a transaction of it (the storage quota's PostgreSQL fallback counts inside one). */
export type LimitsDb = Prisma.TransactionClient
type LimitsApp = { db: LimitsDb; config: Pick<Config, 'storageQuotaBytes' | 'maxConcurrentJobs'> }

/** Jobs that hold a slot: everything not finished. */
export const SLOT_HOLDING = ['validating_files', 'queued', 'running', 'cancelling', 'paused'] as const

/** Seconds a client refused for too many jobs is asked to wait (jobs take minutes; polling faster is waste). */
export const TOO_MANY_JOBS_RETRY_AFTER_S = 30

/** The limits in force for a project, and what it uses now. */
export interface ProjectUsage {
  storage_quota_bytes: number
  storage_used_bytes: number
  max_concurrent_jobs: number
  unfinished_jobs: number
}

async function projectLimits(app: LimitsApp, projectId: string) {
  const project = await app.db.project.findUnique({
    where: { id: projectId },
    select: { storageQuotaBytes: true, maxConcurrentJobs: true },
  })
  if (!project) throw notFound('project', projectId)
  return {
    storageQuotaBytes:
      project.storageQuotaBytes === null ? app.config.storageQuotaBytes : Number(project.storageQuotaBytes),
    maxConcurrentJobs: project.maxConcurrentJobs ?? app.config.maxConcurrentJobs,
  }
}

/** The storage quota in force for the project. */
export async function projectStorageQuota(app: LimitsApp, projectId: string): Promise<number> {
  return (await projectLimits(app, projectId)).storageQuotaBytes
}

/**
 * Bytes the project keeps stored: files not deleted and not rejected (datasets and job result files; a
 * rejected file's bytes are removed), artifacts (uploaded and fine-tuned models, checkpoints) and the
 * backbone features cached for its files.
 */
export async function storageUsed(app: LimitsApp, projectId: string): Promise<number> {
  const [files, artifacts] = await Promise.all([
    app.db.file.aggregate({ where: { projectId, deletedAt: null, status: { not: 'error' } }, _sum: { bytes: true } }),
    // a deleted model's bytes are removed from storage; its artifact row stays for lineage
    app.db.artifact.aggregate({
      where: {
        projectId,
        NOT: { AND: [{ models: { some: {} } }, { models: { every: { deletedAt: { not: null } } } }] },
      },
      _sum: { bytes: true },
    }),
  ])
  return Number(files._sum.bytes ?? 0n) + Number(artifacts._sum.bytes ?? 0n) + (await featureBytes(app.db, projectId))
}

export async function projectUsage(app: LimitsApp, projectId: string): Promise<ProjectUsage> {
  const limits = await projectLimits(app, projectId)
  const [used, jobs] = await Promise.all([
    storageUsed(app, projectId),
    app.db.fineTuningJob.count({ where: { projectId, status: { in: [...SLOT_HOLDING] } } }),
  ])
  return {
    storage_quota_bytes: limits.storageQuotaBytes,
    storage_used_bytes: used,
    max_concurrent_jobs: limits.maxConcurrentJobs,
    unfinished_jobs: jobs,
  }
}

/** Refuses a new job while the project already has its maximum of unfinished jobs: 429 with Retry-After. */
export async function assertJobSlots(app: LimitsApp, projectId: string): Promise<void> {
  const { maxConcurrentJobs } = await projectLimits(app, projectId)
  const unfinished = await app.db.fineTuningJob.count({
    where: { projectId, status: { in: [...SLOT_HOLDING] } },
  })
  if (unfinished < maxConcurrentJobs) return
  throw new AppError(
    'too_many_jobs',
    `The project has ${unfinished} unfinished jobs, its limit is ${maxConcurrentJobs}; wait for one to finish or cancel one.`,
    { headers: { 'retry-after': String(TOO_MANY_JOBS_RETRY_AFTER_S) } },
  )
}

const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`
/** How long a create may hold its project's job-slot lock (a process that dies frees it after this). */
const JOB_SLOT_LOCK_MS = 15_000

/**
 * Runs `fn` (count the unfinished jobs, then create one) holding the project's job-slot lock in Redis, so
 * simultaneous creates in any API process take turns: each counts the jobs the ones before it committed,
 * and 20 creates at once with a limit of 1 make exactly one job. Waiting happens on Redis, not on a held
 * database connection.
 */
export async function withJobSlotLock<T>(
  app: Pick<FastifyInstance, 'redis' | 'config'> & { log?: Pick<FastifyInstance['log'], 'warn'> },
  projectId: string,
  fn: () => Promise<T>,
): Promise<T> {
  const key = `${app.config.queuePrefix}:locks:job-slots:${projectId}`
  const token = randomUUID()
  const deadline = Date.now() + JOB_SLOT_LOCK_MS
  const take = () =>
    app.redis.set(key, token, 'PX', JOB_SLOT_LOCK_MS, 'NX').catch((err: Error) => {
      // Redis down: a job is still accepted and stored (the reconciler queues it once Redis is back), at
      // the price of exactness: creates racing in that window may overshoot the limit, as before the lock.
      app.log?.warn({ err: err.message, projectId }, 'job-slot lock unavailable (Redis down); counting without it')
      return 'UNLOCKED' as const
    })
  for (;;) {
    const got = await take()
    if (got === 'OK') break
    if (got === 'UNLOCKED') return fn()
    if (Date.now() > deadline)
      throw new AppError('service_unavailable', 'Other job creates of this project are still running; retry shortly.', {
        headers: { 'retry-after': '2' },
      })
    await new Promise((r) => setTimeout(r, 20 + Math.random() * 30))
  }
  try {
    return await fn()
  } finally {
    await app.redis.eval(UNLOCK, 1, key, token).catch(() => {})
  }
}
