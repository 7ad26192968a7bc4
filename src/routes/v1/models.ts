import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { deleteModel, getModel, listModels, modelZip, presentModel } from '../../modules/models/models-service.js'
import { errorResponses, IdParams, ListQuery, listOf } from '../../schemas/common.js'
import { DeletedObject, ModelObject } from '../../schemas/objects.js'

// Model ids of fine-tuned models contain colons (`ft:mnist-cnn:refit:abc12345`): clients URL-encode them.
const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/models',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'listModels',
        summary: "List built-in models and the project's own, newest first",
        querystring: ListQuery,
        response: { 200: listOf(ModelObject), ...errorResponses(400) },
      },
    },
    async (req) => listModels(app, req.projectId, req.query),
  )

  app.get(
    '/v1/models/:id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'getModel',
        summary: 'Get a model: input shape, classes, preprocessing, lineage, metrics',
        params: IdParams,
        response: { 200: Type.Ref('Model'), ...errorResponses(404) },
      },
    },
    async (req) => presentModel(await getModel(app.db, req.projectId, req.params.id)),
  )

  app.delete(
    '/v1/models/:id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'deleteModel',
        summary: 'Delete a fine-tuned or uploaded model (refused while an unfinished job uses it)',
        params: IdParams,
        response: { 200: DeletedObject, ...errorResponses(400, 404, 409) },
      },
    },
    async (req) => deleteModel(app, req.projectId, req.params.id),
  )

  app.get(
    '/v1/models/:id/content',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'downloadModel',
        summary: 'Download the whole model (raw input to classes) as a zip of model.json, weights.bin, metadata.json',
        params: IdParams,
        produces: ['application/zip'],
        response: {
          200: {
            description: 'zip archive',
            content: { 'application/zip': { schema: { type: 'string', format: 'binary' } } },
          },
          ...errorResponses(404),
        },
      },
    },
    async (req, reply) => {
      const model = await getModel(app.db, req.projectId, req.params.id)
      const stream = await modelZip(app, model)
      const name = model.id.replace(/[^a-zA-Z0-9._-]+/g, '_')
      return reply
        .header('content-type', 'application/zip')
        .header('content-disposition', `attachment; filename="${name}.zip"`)
        .send(stream as never) // a stream; the documented 200 is binary, which the type provider cannot express
    },
  )
}

export default routes
