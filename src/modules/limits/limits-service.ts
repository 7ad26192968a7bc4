// Per-project limits: stored dataset bytes and unfinished jobs. The server defaults come from the
// config; a project's own `storageQuotaBytes` / `maxConcurrentJobs` override them (set through
// PATCH /v1/admin/projects/{id}). The checks are count-then-act: two requests racing for the last slot
// can both pass, so a limit can be overshot by the number of concurrent requests, never more.
import type { FastifyInstance } from 'fastify'
import { AppError, notFound } from '../../errors.js'
import { featureBytes } from '../features/feature-cache-service.js'

type LimitsApp = Pick<FastifyInstance, 'db' | 'config'>

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

/**
 * Bytes the project keeps stored: files not deleted and not rejected (a rejected file's bytes are removed),
 * and the backbone features cached for its files.
 */
export async function storageUsed(app: LimitsApp, projectId: string): Promise<number> {
  const sum = await app.db.file.aggregate({
    where: { projectId, deletedAt: null, status: { not: 'error' } },
    _sum: { bytes: true },
  })
  return Number(sum._sum.bytes ?? 0n) + (await featureBytes(app.db, projectId))
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

/**
 * Refuses `incomingBytes` more when they would take the project over its quota. Called after the upload
 * is streamed (its size is known only then; the caller removes the bytes when this throws). 403, not
 * 429: the answer does not change by waiting, only by deleting files or raising the quota.
 */
export async function assertStorageQuota(app: LimitsApp, projectId: string, incomingBytes: number): Promise<void> {
  const { storageQuotaBytes } = await projectLimits(app, projectId)
  const used = await storageUsed(app, projectId)
  if (used + incomingBytes <= storageQuotaBytes) return
  throw new AppError(
    'storage_quota_exceeded',
    `This upload (${incomingBytes} bytes) would bring the project's stored datasets to ${used + incomingBytes} bytes; the quota is ${storageQuotaBytes}. Delete files you no longer need.`,
    {
      param: 'file',
      details: [
        { field: 'storage_used_bytes', message: String(used) },
        { field: 'storage_quota_bytes', message: String(storageQuotaBytes) },
      ],
    },
  )
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
