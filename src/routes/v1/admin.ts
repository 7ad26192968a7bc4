import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { createApiKey, createProject, listProjects } from '../../modules/projects/projects-service.js'
import { errorResponses, IdParams, listOf } from '../../schemas/common.js'
import { ApiKeyObject, ProjectObject } from '../../schemas/objects.js'

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/admin/projects',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'createProject',
        summary: 'Create a project',
        body: Type.Object(
          { name: Type.String({ minLength: 1, maxLength: 100 }) },
          { additionalProperties: false, examples: [{ name: 'digits' }] },
        ),
        response: { 201: Type.Ref('Project'), ...errorResponses(400) },
      },
    },
    async (req, reply) => reply.status(201).send(await createProject(app.db, req.body.name)),
  )

  app.get(
    '/v1/admin/projects',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'listProjects',
        summary: 'List projects (newest first, at most 100)',
        response: { 200: listOf(ProjectObject), ...errorResponses() },
      },
    },
    async () => listProjects(app.db),
  )

  app.post(
    '/v1/admin/projects/:id/api_keys',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'createApiKey',
        summary: 'Create an API key for a project; the key is shown only in this answer',
        params: IdParams,
        body: Type.Optional(
          Type.Object({ name: Type.Optional(Type.String({ maxLength: 100 })) }, { additionalProperties: false }),
        ),
        response: { 201: ApiKeyObject, ...errorResponses(400, 404) },
      },
    },
    async (req, reply) => reply.status(201).send(await createApiKey(app.db, req.params.id, req.body?.name ?? null)),
  )
}

export default routes
