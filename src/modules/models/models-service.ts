import type { Readable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import yazl from 'yazl'
import type { Db } from '../../db/client.js'
import { BUILTIN_MODELS, type BuiltinModelId, ensureBuiltinModelDir } from '../../engine/builtin-models.js'
import { AppError, notFound } from '../../errors.js'
import type { Artifact, Model } from '../../generated/prisma/client.js'
import { unixSeconds } from '../../lib/ids.js'
import { NEWEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
import type { LocalStorage } from '../../storage/local-storage.js'

type ModelRow = Model & { artifact?: Artifact | null }

/** Registers (or refreshes) the built-in models; they belong to no project and every project sees them. */
export async function syncBuiltinModels(db: Db) {
  for (const m of BUILTIN_MODELS) {
    const data = { kind: 'builtin' as const, description: m.description, metadata: m.metadata as object }
    await db.model.upsert({ where: { id: m.id }, create: { id: m.id, ...data }, update: data })
  }
}

export function presentModel(m: ModelRow) {
  const meta = m.metadata as Record<string, unknown>
  return {
    id: m.id,
    object: 'model' as const,
    created: unixSeconds(m.createdAt)!,
    created_at: unixSeconds(m.createdAt)!,
    owned_by: m.projectId ?? 'refit',
    kind: m.kind,
    description: m.description,
    base_model: m.baseModelId,
    fine_tuning_job: m.jobId,
    training_file: m.trainingFileId,
    input_shape: (meta.input_shape as number[]) ?? null,
    classes: (meta.classes as string[] | null) ?? null,
    preprocessing: (meta.preprocessing as Record<string, unknown>) ?? null,
    feature_layer: (meta.feature_layer as string | null) ?? null,
    metrics: (meta.metrics as Record<string, unknown>) ?? null,
    backend: (meta.backend as string) ?? null,
    seed: (meta.seed as number) ?? null,
    bytes: m.artifact ? Number(m.artifact.bytes) : null,
    sha256: m.artifact?.sha256 ?? null,
  }
}

const visibleTo = (projectId: string) => ({ deletedAt: null, OR: [{ projectId }, { projectId: null }] })

export async function listModels(app: FastifyInstance, projectId: string, page: Page) {
  const limit = page.limit ?? 20
  const cursor = page.after
    ? await app.db.model.findFirst({ where: { id: page.after, ...visibleTo(projectId) } })
    : null
  const rows = await app.db.model.findMany({
    where: { AND: [visibleTo(projectId), olderThan(cursor)] },
    orderBy: NEWEST_FIRST,
    include: { artifact: true },
    take: limit + 1,
  })
  return toList(rows, limit, presentModel)
}

export async function getModel(db: Db, projectId: string, id: string): Promise<ModelRow> {
  const row = await db.model.findFirst({ where: { id, ...visibleTo(projectId) }, include: { artifact: true } })
  if (!row) throw notFound('model', id)
  return row
}

export async function deleteModel(app: FastifyInstance, projectId: string, id: string) {
  const row = await getModel(app.db, projectId, id)
  if (row.kind === 'builtin' || row.kind === 'architecture')
    throw new AppError('builtin_model_immutable', `${id} is a built-in model and cannot be deleted.`)
  const busy = await app.db.fineTuningJob.count({
    where: { baseModelId: id, status: { in: ['validating_files', 'queued', 'running', 'cancelling'] } },
  })
  if (busy) throw new AppError('model_in_use', `Model ${id} is the base of ${busy} unfinished job(s).`)
  await app.db.model.update({ where: { id }, data: { deletedAt: new Date() } })
  if (row.artifact) await app.storage.remove(row.artifact.path)
  return { id, object: 'model' as const, deleted: true }
}

/** Directory holding model.json, weights.bin and metadata.json of any model. */
export async function modelDir(storage: LocalStorage, m: ModelRow): Promise<string> {
  if (m.kind === 'builtin') return ensureBuiltinModelDir(m.id as BuiltinModelId, storage.resolve('models'))
  if (!m.artifact) throw new AppError('not_found', `Model ${m.id} has no stored weights.`)
  return storage.resolve(m.artifact.path)
}

/** A zip of the model directory, streamed: stock TF.js loads model.json + weights.bin from it. */
export async function modelZip(app: FastifyInstance, m: ModelRow) {
  const dir = await modelDir(app.storage, m)
  const zip = new yazl.ZipFile()
  for (const name of ['model.json', 'weights.bin', 'metadata.json']) zip.addFile(`${dir}/${name}`, name)
  zip.end()
  return zip.outputStream as unknown as Readable
}
