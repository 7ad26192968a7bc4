import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { notifyKeyRevoked } from '../../modules/jobs/job-updates.js'
import { projectUsage } from '../../modules/limits/limits-service.js'
import {
  createApiKey,
  createProject,
  listApiKeys,
  listProjects,
  revokeApiKey,
  updateProjectLimits,
} from '../../modules/projects/projects-service.js'
import { errorResponses, IdParams, listOf, Nullable } from '../../schemas/common.js'
import {
  apiKeyCreatedExample,
  apiKeyInfoExample,
  jsonResponse,
  listExample,
  projectExample,
  projectUsageExample,
} from '../../schemas/examples.js'
import { ApiKeyObject, ProjectObject } from '../../schemas/objects.js'

const Unix = Type.Integer({ description: 'Unix seconds' })

/** A key as listed and revoked: the public prefix, never the secret or its hash. */
const ApiKeyInfo = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('api_key'),
    project_id: Type.String(),
    name: Nullable(Type.String()),
    prefix: Type.String({ description: 'Public part of the key (`rk-<prefix>.…`), to recognise it.' }),
    created_at: Unix,
    last_used_at: Nullable(Type.Integer({ description: 'Unix seconds; updated at most once a minute.' })),
    revoked_at: Nullable(Unix),
  },
  { additionalProperties: false },
)

const KeyParams = Type.Object(
  { id: Type.String({ maxLength: 200 }), key_id: Type.String({ maxLength: 200 }) },
  { additionalProperties: false },
)

const ProjectUsage = Type.Object({
  id: Type.String(),
  object: Type.Literal('project.usage'),
  storage_quota_bytes: Type.Integer({ description: 'In force: the project override, else STORAGE_QUOTA_BYTES.' }),
  storage_used_bytes: Type.Integer({ description: 'Bytes of files not deleted and not rejected.' }),
  max_concurrent_jobs: Type.Integer({ description: 'In force: the project override, else MAX_CONCURRENT_JOBS.' }),
  unfinished_jobs: Type.Integer(),
})

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
        response: { 201: jsonResponse(ProjectObject, projectExample), ...errorResponses(400) },
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
        response: { 200: jsonResponse(listOf(ProjectObject), listExample(projectExample)), ...errorResponses() },
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
          Type.Object(
            { name: Type.Optional(Type.String({ maxLength: 100 })) },
            { additionalProperties: false, examples: [{ name: 'laptop' }] },
          ),
        ),
        response: { 201: jsonResponse(ApiKeyObject, apiKeyCreatedExample), ...errorResponses(400, 404) },
      },
    },
    async (req, reply) => reply.status(201).send(await createApiKey(app.db, req.params.id, req.body?.name ?? null)),
  )

  app.get(
    '/v1/admin/projects/:id/api_keys',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'listApiKeys',
        summary: "List a project's API keys (newest first, revoked ones included); secrets are never shown again",
        params: IdParams,
        response: { 200: jsonResponse(listOf(ApiKeyInfo), listExample(apiKeyInfoExample)), ...errorResponses(404) },
      },
    },
    async (req) => listApiKeys(app.db, req.params.id),
  )

  app.delete(
    '/v1/admin/projects/:id/api_keys/:key_id',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'revokeApiKey',
        summary: 'Revoke an API key: the next request made with it gets 401 invalid_api_key',
        params: KeyParams,
        response: {
          200: jsonResponse(ApiKeyInfo, { ...apiKeyInfoExample, revoked_at: apiKeyInfoExample.created_at + 600 }),
          ...errorResponses(404),
        },
      },
    },
    async (req) => {
      const revoked = await revokeApiKey(app.db, req.params.id, req.params.key_id)
      // every API process forgets the key row before this answers: the next request with it is refused
      await app.lookups.invalidate()
      // and closes the live event streams opened with it
      await notifyKeyRevoked(app.redis, app.config.queuePrefix, req.params.key_id)
      return revoked
    },
  )

  app.get(
    '/v1/admin/projects/:id/usage',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'getProjectUsage',
        summary: "A project's limits in force and what it uses of them",
        params: IdParams,
        response: { 200: jsonResponse(ProjectUsage, projectUsageExample), ...errorResponses(404) },
      },
    },
    async (req) => ({
      id: req.params.id,
      object: 'project.usage' as const,
      ...(await projectUsage(app, req.params.id)),
    }),
  )

  app.patch(
    '/v1/admin/projects/:id/limits',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'updateProjectLimits',
        summary: "Set a project's storage quota and concurrent-job limit (null: back to the server default)",
        params: IdParams,
        body: Type.Object(
          {
            storage_quota_bytes: Type.Optional(
              Nullable(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
            ),
            max_concurrent_jobs: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 10_000 }))),
          },
          { additionalProperties: false, examples: [{ storage_quota_bytes: 53687091200, max_concurrent_jobs: 8 }] },
        ),
        response: { 200: jsonResponse(ProjectUsage, projectUsageExample), ...errorResponses(400, 404) },
      },
    },
    async (req) => {
      await updateProjectLimits(app.db, req.params.id, req.body)
      return { id: req.params.id, object: 'project.usage' as const, ...(await projectUsage(app, req.params.id)) }
    },
  )
}

export default routes
