// Models of every project (and the built-in ones), with metrics, lineage and download, for the dashboard.
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { notFound } from '../../../errors.js'
import { NEWEST_FIRST, olderThan, toList } from '../../../lib/pagination.js'
import { EXPORT_TIMEOUT_MS, modelDownload } from '../../../modules/models/model-export.js'
import { ModelDownloadQuery } from '../../../modules/models/model-schemas.js'
import {
  metricRowsFor,
  modelLineage,
  presentModel,
  presentModelWithMetrics,
} from '../../../modules/models/models-service.js'
import { errorResponses, IdParams, listOf } from '../../../schemas/common.js'
import { jsonResponse, lineageExample, listExample } from '../../../schemas/examples.js'
import { AdminModel, AdminModelQuery, adminModelExample } from './schemas.js'

async function findModel(app: FastifyInstance, id: string) {
  const model = await app.db.model.findFirst({
    where: { id, deletedAt: null },
    include: { artifact: true, project: true },
  })
  if (!model) throw notFound('model', id)
  return model
}

const projectOf = (m: { project: { id: string; name: string } | null }) =>
  m.project ? { id: m.project.id, name: m.project.name } : null

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/admin/models',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListModels',
        summary: 'List models of every project and the built-in ones, newest first, with metrics',
        description: 'Filters combine: `project`, `kind` (builtin, uploaded, fine_tuned, architecture).',
        querystring: AdminModelQuery,
        response: { 200: jsonResponse(listOf(AdminModel), listExample(adminModelExample)), ...errorResponses(400) },
      },
    },
    async (req) => {
      const q = req.query
      const limit = q.limit ?? 20
      const filters = {
        deletedAt: null,
        ...(q.project ? { projectId: q.project } : {}),
        ...(q.kind ? { kind: q.kind } : {}),
      }
      const cursor = q.after ? await app.db.model.findUnique({ where: { id: q.after } }) : null
      const rows = await app.db.model.findMany({
        where: { AND: [filters, olderThan(cursor)] },
        orderBy: NEWEST_FIRST,
        include: { artifact: true, project: true },
        take: limit + 1,
      })
      const metrics = await metricRowsFor(app.db, rows.slice(0, limit))
      return toList(rows, limit, (m) => ({
        ...presentModel(m, m.jobId ? metrics.get(m.jobId) : undefined),
        project: projectOf(m),
      }))
    },
  )

  app.get(
    '/v1/admin/models/:id',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminGetModel',
        summary: 'Get any model: shape, classes, metrics (final, best, evaluation), project',
        params: IdParams,
        response: { 200: jsonResponse(AdminModel, adminModelExample), ...errorResponses(404) },
      },
    },
    async (req) => {
      const model = await findModel(app, req.params.id)
      return { ...(await presentModelWithMetrics(app.db, model)), project: projectOf(model) }
    },
  )

  app.get(
    '/v1/admin/models/:id/lineage',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminGetModelLineage',
        summary: 'Where any model comes from: base model chain, job, training file, checkpoints',
        params: IdParams,
        response: { 200: jsonResponse(Type.Ref('ModelLineage'), lineageExample), ...errorResponses(404) },
      },
    },
    async (req) => {
      const model = await findModel(app, req.params.id)
      // Built-in models belong to no project: '' matches none, and built-ins are visible to every project.
      return modelLineage(app, model.projectId ?? '', model.id)
    },
  )

  app.get(
    '/v1/admin/models/:id/content',
    {
      config: { auth: 'admin' },
      // a download, not held to REQUEST_TIMEOUT_MS: `format=saved_model` compiles the model in an inference
      // process before the zip streams (inception-v3: ~20 s on a busy 2-core machine)
      handlerTimeout: EXPORT_TIMEOUT_MS,
      schema: {
        tags: ['admin'],
        operationId: 'adminDownloadModel',
        summary:
          'Download any model as a zip of model.json, weights.bin, metadata.json (or a frozen SavedModel: `format=saved_model`)',
        params: IdParams,
        querystring: ModelDownloadQuery,
        response: {
          200: {
            description: 'zip archive',
            content: { 'application/zip': { schema: { type: 'string', format: 'binary' } } },
          },
          ...errorResponses(400, 404, 409, 503),
        },
      },
    },
    async (req, reply) => {
      const model = await findModel(app, req.params.id)
      const stream = await modelDownload(app, model, req.query.format)
      const name = model.id.replace(/[^a-zA-Z0-9._-]+/g, '_')
      return reply
        .header('content-type', 'application/zip')
        .header('content-disposition', `attachment; filename="${name}.zip"`)
        .send(stream as never)
    },
  )
}

export default routes
