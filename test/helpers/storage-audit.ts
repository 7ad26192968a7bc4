// Walks the storage and attributes every stored object to the project that owns it, by the key layout
// (files/<file>, models/<model>/…, jobs/<job>/…, results/<job>.csv, features/<project>/…), so a test can
// check that a project's stored bytes are exactly what its storage usage (the quota's figure) counts: a
// writer that stores bytes without reserving and recording them shows up here, whoever it is.
import type { FastifyInstance } from 'fastify'

export interface StorageAudit {
  /** bytes of every object the project owns */
  bytes: number
  /** objects the walk could not attribute to any project (in-flight temporaries, unknown layouts) */
  unknown: string[]
  /** the project's objects, key -> bytes, for failure messages */
  objects: Record<string, number>
}

export async function auditProjectStorage(app: FastifyInstance, projectId: string): Promise<StorageAudit> {
  const [files, models, jobs] = await Promise.all([
    app.db.file.findMany({ select: { id: true, projectId: true } }),
    app.db.model.findMany({ select: { id: true, projectId: true } }),
    app.db.fineTuningJob.findMany({ select: { id: true, projectId: true } }),
  ])
  const owner = new Map<string, string | null>()
  for (const f of files) owner.set(`files/${f.id}`, f.projectId)
  for (const m of models) owner.set(`models/${m.id}`, m.projectId)
  for (const j of jobs) {
    owner.set(`jobs/${j.id}`, j.projectId)
    owner.set(`results/${j.id}.csv`, j.projectId)
  }
  const audit: StorageAudit = { bytes: 0, unknown: [], objects: {} }
  for (const { key, bytes } of await app.storage.list('')) {
    const parts = key.split('/')
    let project: string | null | undefined
    if (parts[0] === 'features') project = parts[1]
    else if (parts[0] === 'files' || parts[0] === 'results') project = owner.get(parts.slice(0, 2).join('/'))
    else if (parts[0] === 'models' || parts[0] === 'jobs') project = owner.get(parts.slice(0, 2).join('/'))
    if (project === undefined) {
      // built-in models and cache/ (compiled graphs, content-addressed, shared by every project and kept
      // under their own byte budget) are the server's own; everything else unattributed is reported
      if (parts[0] !== 'models' && parts[0] !== 'cache') audit.unknown.push(key)
      continue
    }
    if (project !== projectId) continue
    audit.bytes += bytes
    audit.objects[key] = bytes
  }
  return audit
}
