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
  const project = await db.project.findUnique({ where: { id: projectId } })
  if (!project) throw notFound('project', projectId)
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
