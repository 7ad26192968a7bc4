import type { Db } from '../../db/client.js'
import { notFound } from '../../errors.js'
import { newId, unixSeconds } from '../../lib/ids.js'
import { generateApiKey } from '../auth/api-keys.js'

export async function createProject(db: Db, name: string) {
  const project = await db.project.create({ data: { id: newId('proj'), name } })
  return { id: project.id, object: 'project' as const, name: project.name, created_at: unixSeconds(project.createdAt)! }
}

export async function listProjects(db: Db) {
  const rows = await db.project.findMany({ orderBy: [{ createdAt: 'desc' }, { id: 'desc' }], take: 100 })
  return {
    object: 'list' as const,
    data: rows.map((p) => ({
      id: p.id,
      object: 'project' as const,
      name: p.name,
      created_at: unixSeconds(p.createdAt)!,
    })),
    has_more: false,
  }
}

/** Creates a key; the secret is returned only here, the database keeps its sha256. */
export async function createApiKey(db: Db, projectId: string, name: string | null) {
  await requireProject(db, projectId)
  const { key, prefix, secretHash } = generateApiKey()
  const row = await db.apiKey.create({ data: { id: newId('key'), projectId, name, prefix, secretHash } })
  return {
    id: row.id,
    object: 'api_key' as const,
    project_id: projectId,
    name: row.name,
    key,
    prefix,
    created_at: unixSeconds(row.createdAt)!,
  }
}

/** A key as listed: never the secret, never its hash. */
export function presentApiKeyInfo(row: {
  id: string
  projectId: string
  name: string | null
  prefix: string
  createdAt: Date
  lastUsedAt: Date | null
  revokedAt: Date | null
}) {
  return {
    id: row.id,
    object: 'api_key' as const,
    project_id: row.projectId,
    name: row.name,
    prefix: row.prefix,
    created_at: unixSeconds(row.createdAt)!,
    last_used_at: unixSeconds(row.lastUsedAt),
    revoked_at: unixSeconds(row.revokedAt),
  }
}

async function requireProject(db: Db, projectId: string) {
  const project = await db.project.findUnique({ where: { id: projectId } })
  if (!project) throw notFound('project', projectId)
  return project
}

/** The project's keys, newest first, revoked ones included (with revoked_at). */
export async function listApiKeys(db: Db, projectId: string) {
  await requireProject(db, projectId)
  const rows = await db.apiKey.findMany({
    where: { projectId },
    orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
    take: 1000,
  })
  return { object: 'list' as const, data: rows.map(presentApiKeyInfo), has_more: rows.length === 1000 }
}

/**
 * Revokes a key: the next request with it is refused (the caller then drops every API process's lookup
 * cache: app.lookups.invalidate()). Revoking a revoked key keeps its first revoked_at.
 */
export async function revokeApiKey(db: Db, projectId: string, keyId: string) {
  await requireProject(db, projectId)
  await db.apiKey.updateMany({ where: { id: keyId, projectId, revokedAt: null }, data: { revokedAt: new Date() } })
  const row = await db.apiKey.findFirst({ where: { id: keyId, projectId } })
  if (!row) throw notFound('API key', keyId, 'key_id')
  return presentApiKeyInfo(row)
}

/** Sets (or, with null, clears back to the server default) a project's quota and job limit. */
export async function updateProjectLimits(
  db: Db,
  projectId: string,
  patch: { storage_quota_bytes?: number | null; max_concurrent_jobs?: number | null },
) {
  await requireProject(db, projectId)
  await db.project.update({
    where: { id: projectId },
    data: {
      ...(patch.storage_quota_bytes !== undefined
        ? { storageQuotaBytes: patch.storage_quota_bytes === null ? null : BigInt(patch.storage_quota_bytes) }
        : {}),
      ...(patch.max_concurrent_jobs !== undefined ? { maxConcurrentJobs: patch.max_concurrent_jobs } : {}),
    },
  })
}
