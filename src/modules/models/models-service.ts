import type { Readable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import yazl from 'yazl'
import type { Db } from '../../db/client.js'
import { ARCHITECTURES } from '../../engine/architectures.js'
import { BUILTIN_MODELS, type BuiltinModelId, ensureBuiltinModelDir } from '../../engine/builtin-models.js'
import { AppError, notFound } from '../../errors.js'
import type { Artifact, Model } from '../../generated/prisma/client.js'
import { unixSeconds } from '../../lib/ids.js'
import { NEWEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
import type { Storage } from '../../storage/storage.js'
import { EPOCH_ROWS_ONLY } from '../jobs/batch-metrics.js'
import { type MetricRow, summarizeMetrics } from '../jobs/lifecycle/metrics-summary.js'

type ModelRow = Model & { artifact?: Artifact | null }

/** Registers (or refreshes) the built-in models; they belong to no project and every project sees them. */
export async function syncBuiltinModels(db: Db) {
  for (const m of BUILTIN_MODELS) {
    const data = { kind: 'builtin' as const, description: m.description, metadata: m.metadata as object }
    await db.model.upsert({ where: { id: m.id }, create: { id: m.id, ...data }, update: data })
  }
  // Untrained presets: sized from the training file when a job trains them (supervised or as a student).
  for (const a of ARCHITECTURES) {
    const metadata = { input_shape: null, inputs: a.inputs, classes: null, feature_layer: null, preprocessing: null }
    const data = { kind: 'architecture' as const, description: a.description, metadata }
    await db.model.upsert({ where: { id: a.id }, create: { id: a.id, ...data }, update: data })
  }
}

export type { MetricRow }

/**
 * The API's model object. `metrics` is the summary the job's success computed once (final, best with its
 * epoch and the metric that decided, the epoch whose weights the model holds, and the held-out
 * evaluation; see jobs/lifecycle/metrics-summary.ts). Models registered before that summary existed get
 * it computed from their job's metric rows by the same definition.
 */
export function presentModel(m: ModelRow, metricRows?: MetricRow[]) {
  const meta = m.metadata as Record<string, unknown>
  const stored = (meta.metrics as Record<string, unknown> | undefined) ?? null
  const rows = metricRows ?? []
  let metrics: Record<string, unknown> | null = null
  if (stored && 'best_by' in stored) metrics = stored
  else if (stored || rows.length) {
    const evaluation = (stored?.evaluation as Record<string, unknown> | undefined) ?? null
    metrics = rows.length
      ? { ...summarizeMetrics(rows, { evaluation }) }
      : { final: stored?.final ?? null, best: stored?.best ?? null, evaluation }
  }
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
    metrics,
    backend: (meta.backend as string) ?? null,
    seed: (meta.seed as number) ?? null,
    bytes: m.artifact ? Number(m.artifact.bytes) : null,
    sha256: m.artifact?.sha256 ?? null,
  }
}

/** Metric rows of the jobs that made `models`, by job id (one query). */
export async function metricRowsFor(db: Db, models: ModelRow[]): Promise<Map<string, MetricRow[]>> {
  const jobIds = models.map((m) => m.jobId).filter((j): j is string => !!j)
  const out = new Map<string, MetricRow[]>()
  if (!jobIds.length) return out
  const rows = await db.metric.findMany({
    where: { jobId: { in: jobIds }, ...EPOCH_ROWS_ONLY },
    select: { jobId: true, step: true, epoch: true, name: true, value: true },
    orderBy: [{ step: 'asc' }],
  })
  for (const r of rows) {
    const list = out.get(r.jobId) ?? []
    list.push(r)
    out.set(r.jobId, list)
  }
  return out
}

/** presentModel with the metric rows of its job. */
export async function presentModelWithMetrics(db: Db, m: ModelRow) {
  const rows = await metricRowsFor(db, [m])
  return presentModel(m, m.jobId ? rows.get(m.jobId) : undefined)
}

const visibleTo = (projectId: string) => ({ deletedAt: null, OR: [{ projectId }, { projectId: null }] })

/** Filters of GET /v1/models. */
export interface ModelFilters extends Page {
  kind?: 'builtin' | 'uploaded' | 'fine_tuned' | 'architecture'
  base_model?: string
  job?: string
}

export async function listModels(app: FastifyInstance, projectId: string, query: ModelFilters) {
  const limit = query.limit ?? 20
  const filters = {
    ...(query.kind ? { kind: query.kind } : {}),
    ...(query.base_model ? { baseModelId: query.base_model } : {}),
    ...(query.job ? { jobId: query.job } : {}),
  }
  const cursor = query.after
    ? await app.db.model.findFirst({ where: { id: query.after, ...visibleTo(projectId) } })
    : null
  const rows = await app.db.model.findMany({
    where: { AND: [visibleTo(projectId), filters, olderThan(cursor)] },
    orderBy: NEWEST_FIRST,
    include: { artifact: true },
    take: limit + 1,
  })
  const metrics = await metricRowsFor(app.db, rows.slice(0, limit))
  return toList(rows, limit, (m) => presentModel(m, m.jobId ? metrics.get(m.jobId) : undefined))
}

export async function getModel(db: Db, projectId: string, id: string): Promise<ModelRow> {
  const row = await db.model.findFirst({ where: { id, ...visibleTo(projectId) }, include: { artifact: true } })
  if (!row) throw notFound('model', id)
  return row
}

/** What deleting a model touches; a worker passes its own (it has no inference pool). */
export type ModelDeleteDeps = Pick<FastifyInstance, 'db' | 'storage' | 'lookups'> & {
  inference?: Pick<NonNullable<FastifyInstance['inference']>, 'evict'>
}

export async function deleteModel(app: ModelDeleteDeps, projectId: string, id: string) {
  const row = await getModel(app.db, projectId, id)
  if (row.kind === 'builtin' || row.kind === 'architecture')
    throw new AppError('builtin_model_immutable', `${id} is a built-in model and cannot be deleted.`)
  const unfinished = ['validating_files', 'queued', 'running', 'cancelling', 'paused'] as const
  const [asBase, asTeacher, evaluations] = await Promise.all([
    app.db.fineTuningJob.count({ where: { baseModelId: id, status: { in: [...unfinished] } } }),
    app.db.fineTuningJob.count({
      where: { status: { in: [...unfinished] }, method: { path: ['distillation', 'teacher_model'], equals: id } },
    }),
    app.db.evaluation.count({ where: { modelId: id, status: { in: ['queued', 'running'] } } }),
  ])
  if (asBase || asTeacher || evaluations) {
    const uses = [
      asBase ? `the base model of ${asBase} unfinished job(s)` : '',
      asTeacher ? `the distillation teacher of ${asTeacher} unfinished job(s)` : '',
      evaluations ? `being evaluated by ${evaluations} unfinished evaluation(s)` : '',
    ].filter(Boolean)
    throw new AppError('model_in_use', `Model ${id} is ${uses.join(', and ')}.`)
  }
  await app.db.model.update({ where: { id }, data: { deletedAt: new Date() } })
  await app.lookups.invalidate()
  if (row.artifact) await app.storage.remove(row.artifact.path)
  app.inference?.evict(`${id}@`)
  return { id, object: 'model' as const, deleted: true }
}

/** Directory holding model.json, weights.bin and metadata.json of any model. */
export async function modelDir(storage: Storage, m: ModelRow): Promise<string> {
  // Built-in models ship with the code: each process keeps its own local copy, never the bucket.
  if (m.kind === 'builtin') return ensureBuiltinModelDir(m.id as BuiltinModelId, storage.workPath('models'))
  if (!m.artifact) throw new AppError('not_found', `Model ${m.id} has no stored weights.`)
  return storage.localPath(m.artifact.path)
}

/** A zip of the model directory, streamed: stock TF.js loads model.json + weights.bin from it. */
export async function modelZip(app: FastifyInstance, m: ModelRow) {
  const dir = await modelDir(app.storage, m)
  const zip = new yazl.ZipFile()
  for (const name of ['model.json', 'weights.bin', 'metadata.json']) zip.addFile(`${dir}/${name}`, name)
  zip.end()
  return zip.outputStream as unknown as Readable
}

/** The cache key of a model's stored weights in the inference processes: changes when the weights do. */
export const modelCacheKey = (m: ModelRow) => `${m.id}@${m.artifact?.sha256 ?? m.kind}`

/** What predicting needs of a model: refuses architectures and models without class names. */
export function predictableSpec(m: ModelRow): { inputShape: number[]; classes: string[] } {
  const meta = m.metadata as { input_shape?: number[]; classes?: string[] | null }
  if (m.kind === 'architecture')
    throw new AppError('model_not_predictable', `${m.id} is an untrained architecture: fine-tune it first.`, {
      param: 'id',
    })
  // fine-tuned on a graph-model base before such models were stored whole (graph + head): the head alone
  const graph = m.metadata as { graph_model?: unknown; graph_base?: unknown }
  if (graph.graph_base && !graph.graph_model)
    throw new AppError(
      'model_not_predictable',
      `${m.id} holds only the head trained on a TF.js graph model's features; fine-tune it again to get the whole network.`,
      { param: 'id' },
    )
  if (!meta.classes?.length)
    throw new AppError(
      'model_not_predictable',
      `${m.id} has no class names, so its outputs cannot be labelled; upload it with \`classes\` or fine-tune it.`,
      { param: 'id' },
    )
  if (!meta.input_shape?.length)
    throw new AppError('model_not_predictable', `${m.id} declares no input shape.`, { param: 'id' })
  return { inputShape: meta.input_shape, classes: meta.classes }
}

const LINEAGE_DEPTH = 32

/**
 * Where a model comes from: its chain of base models (itself first, the root last), the job that made it,
 * the training file, and the job's checkpoints with their metrics.
 */
export async function modelLineage(app: FastifyInstance, projectId: string, id: string) {
  const model = await getModel(app.db, projectId, id)
  const chain = []
  let current: Model | null = model
  const seen = new Set<string>()
  while (current && chain.length < LINEAGE_DEPTH && !seen.has(current.id)) {
    seen.add(current.id)
    chain.push({
      id: current.id,
      kind: current.kind,
      base_model: current.baseModelId,
      fine_tuning_job: current.jobId,
      deleted: current.deletedAt !== null,
    })
    if (!current.baseModelId) break
    current = await app.db.model.findFirst({
      where: { id: current.baseModelId, OR: [{ projectId }, { projectId: null }] },
    })
  }
  const job = model.jobId
    ? await app.db.fineTuningJob.findFirst({
        where: { id: model.jobId, projectId },
        include: { checkpoints: { orderBy: { step: 'asc' } }, trainingFile: true },
      })
    : null
  const file =
    job?.trainingFile ??
    (model.trainingFileId ? await app.db.file.findFirst({ where: { id: model.trainingFileId, projectId } }) : null)
  const stats = (file?.stats ?? null) as { rows?: number; classes?: string[] } | null
  return {
    object: 'model.lineage' as const,
    model: model.id,
    chain,
    teacher: (model.metadata as { distillation?: { teacher?: string | null } }).distillation?.teacher ?? null,
    job: job
      ? {
          id: job.id,
          status: job.status,
          method: job.method as Record<string, unknown>,
          hyperparameters: job.hyperparameters as Record<string, unknown>,
          seed: job.seed,
          backend: job.backend,
          validation_file: job.validationFileId,
          created_at: unixSeconds(job.createdAt)!,
          finished_at: unixSeconds(job.finishedAt),
        }
      : null,
    training_file: file
      ? {
          id: file.id,
          filename: file.filename,
          format: file.format,
          bytes: Number(file.bytes),
          sha256: file.sha256,
          rows: stats?.rows ?? null,
          classes: stats?.classes ?? null,
          deleted: file.deletedAt !== null,
        }
      : null,
    checkpoints: (job?.checkpoints ?? []).map((c) => ({
      id: c.id,
      epoch: c.epoch,
      step: c.step,
      metrics: c.metrics as Record<string, unknown>,
      created_at: unixSeconds(c.createdAt)!,
    })),
  }
}
