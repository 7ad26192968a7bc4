// Evaluations: a model scored on a labelled file of the project, run as a queued job by the worker. The
// file is checked at creation (processed, same kind and shape as the model's input, classes the model
// knows) so an evaluation that cannot work is refused at once instead of failing later.
import type { FastifyInstance } from 'fastify'
import { AppError, notFound } from '../../errors.js'
import type { Evaluation } from '../../generated/prisma/client.js'
import { newId, unixSeconds } from '../../lib/ids.js'
import { NEWEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
import { EVALUATION_JOB_OPTIONS } from '../../queue/catalog.js'
import { checkCompatible } from '../jobs/jobs-service.js'
import { assertEvaluationFits } from '../limits/memory-budget.js'
import { getModel, predictableSpec } from './models-service.js'

export function presentEvaluation(e: Evaluation) {
  return {
    id: e.id,
    object: 'model.evaluation' as const,
    model: e.modelId,
    file: e.fileId,
    status: e.status,
    created_at: unixSeconds(e.createdAt)!,
    finished_at: unixSeconds(e.finishedAt),
    backend: e.backend,
    result: (e.result as Record<string, unknown> as never) ?? null,
    error: e.errorCode ? { code: e.errorCode, message: e.errorMessage ?? '' } : null,
  }
}

export async function createEvaluation(app: FastifyInstance, projectId: string, modelId: string, fileId: string) {
  const model = await getModel(app.db, projectId, modelId)
  const { classes } = predictableSpec(model)
  const file = await app.db.file.findFirst({ where: { id: fileId, projectId, deletedAt: null } })
  if (!file) throw notFound('file', fileId, 'file')
  if (file.status !== 'processed')
    throw new AppError(
      'file_not_ready',
      file.status === 'error'
        ? `File ${fileId} failed validation; it cannot be evaluated on.`
        : `File ${fileId} is still being validated; retry when its status is processed.`,
      { param: 'file' },
    )
  checkCompatible(model, file, 'file')
  const stats = file.stats as { classes?: string[]; image_shape?: number[] } | null
  const meta = model.metadata as { input_shape: number[] }
  if (stats?.image_shape && meta.input_shape.length !== 3)
    throw new AppError(
      'incompatible_dataset',
      `${model.id} takes rows of ${meta.input_shape} features, but ${fileId} holds images.`,
      { param: 'file' },
    )
  const unknown = (stats?.classes ?? []).filter((c) => !classes.includes(c))
  if (unknown.length)
    throw new AppError(
      'incompatible_dataset',
      `${fileId} has ${unknown.length} class(es) ${model.id} does not predict: ${unknown.slice(0, 10).join(', ')}.`,
      {
        param: 'file',
        details: unknown.slice(0, 20).map((c) => ({
          field: 'file',
          message: `expected one of the model's classes (${classes.slice(0, 20).join(', ')}), found class "${c}"`,
        })),
      },
    )
  await assertEvaluationFits(app, model, file)
  const row = await app.db.evaluation.create({
    data: { id: newId('eval'), projectId, modelId: model.id, fileId: file.id },
  })
  try {
    await app.evaluationsQueue.add('evaluate', { evaluationId: row.id }, { ...EVALUATION_JOB_OPTIONS, jobId: row.id })
  } catch (err) {
    await app.db.evaluation.delete({ where: { id: row.id } })
    app.log.warn({ err: (err as Error).message }, 'could not enqueue an evaluation')
    throw new AppError('service_unavailable', 'The queue is unavailable; retry in a few seconds.', {
      headers: { 'retry-after': '5' },
    })
  }
  return presentEvaluation(row)
}

export async function listEvaluations(app: FastifyInstance, projectId: string, modelId: string, page: Page) {
  const model = await getModel(app.db, projectId, modelId)
  const limit = page.limit ?? 20
  const where = { projectId, modelId: model.id }
  const cursor = page.after ? await app.db.evaluation.findFirst({ where: { ...where, id: page.after } }) : null
  const rows = await app.db.evaluation.findMany({
    where: { ...where, ...olderThan(cursor) },
    orderBy: NEWEST_FIRST,
    take: limit + 1,
  })
  return toList(rows, limit, presentEvaluation)
}

export async function getEvaluation(app: FastifyInstance, projectId: string, modelId: string, evalId: string) {
  const model = await getModel(app.db, projectId, modelId)
  const row = await app.db.evaluation.findFirst({ where: { id: evalId, projectId, modelId: model.id } })
  if (!row) throw notFound('evaluation', evalId, 'eval_id')
  return presentEvaluation(row)
}
