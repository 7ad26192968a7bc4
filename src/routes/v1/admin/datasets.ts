// Files (datasets) across every project, with sample images of image datasets for the dashboard.
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { idxSamples, imageZipSamples } from '../../../dashboard/dataset-samples.js'
import { AppError, notFound } from '../../../errors.js'
import { NEWEST_FIRST, olderThan, toList } from '../../../lib/pagination.js'
import { presentFile } from '../../../modules/files/files-service.js'
import { errorResponses, IdParams, listOf } from '../../../schemas/common.js'
import { jsonResponse, listExample } from '../../../schemas/examples.js'
import { AdminFile, AdminFileQuery, adminFileExample, SampleList, sampleListExample } from './schemas.js'

async function findFile(app: FastifyInstance, id: string) {
  const file = await app.db.file.findFirst({ where: { id, deletedAt: null }, include: { project: true } })
  if (!file) throw notFound('file', id)
  return file
}

type FileWithProject = Awaited<ReturnType<typeof findFile>>

const presentAdminFile = (f: FileWithProject, forList = false) => ({
  ...presentFile(f, forList),
  project: { id: f.project.id, name: f.project.name },
})

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/admin/files',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListFiles',
        summary: 'List datasets of every project, newest first, with their project',
        description: 'Filters combine: `project`, `status` (uploaded, processed, error), `format`, `purpose`.',
        querystring: AdminFileQuery,
        response: { 200: jsonResponse(listOf(AdminFile), listExample(adminFileExample)), ...errorResponses(400) },
      },
    },
    async (req) => {
      const q = req.query
      const limit = q.limit ?? 20
      const filters = {
        deletedAt: null,
        ...(q.project ? { projectId: q.project } : {}),
        ...(q.status ? { status: q.status } : {}),
        ...(q.format ? { format: q.format } : {}),
        ...(q.purpose ? { purpose: q.purpose } : {}),
      }
      const cursor = q.after ? await app.db.file.findUnique({ where: { id: q.after } }) : null
      const rows = await app.db.file.findMany({
        where: { AND: [filters, olderThan(cursor)] },
        orderBy: NEWEST_FIRST,
        include: { project: true },
        take: limit + 1,
      })
      return toList(rows, limit, (f) => presentAdminFile(f, true))
    },
  )

  app.get(
    '/v1/admin/files/:id',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminGetFile',
        summary: 'Get any dataset: status, validation error, stats (rows, shape, classes and counts)',
        params: IdParams,
        response: { 200: jsonResponse(AdminFile, adminFileExample), ...errorResponses(404) },
      },
    },
    async (req) => presentAdminFile(await findFile(app, req.params.id)),
  )

  app.get(
    '/v1/admin/files/:id/samples',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListFileSamples',
        summary: 'Sample images of an image dataset (image_zip or idx), as PNG: spread over the classes, or by index',
        params: IdParams,
        querystring: Type.Object(
          {
            n: Type.Optional(Type.Integer({ minimum: 1, maximum: 32, default: 10 })),
            indices: Type.Optional(
              Type.String({
                maxLength: 600,
                pattern: '^[0-9]+(,[0-9]+){0,49}$',
                description:
                  'Comma-separated dataset indices (at most 50), e.g. the `misclassified` samples of an evaluation; replaces `n`.',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 200: jsonResponse(SampleList, sampleListExample), ...errorResponses(400, 404) },
      },
    },
    async (req) => {
      const file = await findFile(app, req.params.id)
      if (file.status !== 'processed' || !file.storagePath)
        throw new AppError('file_not_ready', `File ${file.id} is ${file.status}; samples need a processed file.`)
      if (file.format !== 'idx' && file.format !== 'image_zip')
        throw new AppError('invalid_request', `File ${file.id} is ${file.format}, not an image dataset.`, {
          param: 'id',
        })
      const pick = req.query.indices ? req.query.indices.split(',').map(Number) : (req.query.n ?? 10)
      const path = await app.storage.localPath(file.storagePath)
      const samples = file.format === 'idx' ? await idxSamples(path, pick) : await imageZipSamples(path, pick)
      const rows = (file.stats as { rows?: number } | null)?.rows ?? samples.length
      return {
        object: 'list' as const,
        data: samples.map(({ png, ...s }) => ({ ...s, png_base64: png.toString('base64') })),
        has_more: rows > samples.length,
      }
    },
  )
}

export default routes
