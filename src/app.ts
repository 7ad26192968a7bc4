// The app as a Fastify plugin tree: external plugins -> infrastructure -> auth -> routes. server.ts
// listens; tests build this and call app.inject.

import { randomBytes } from 'node:crypto'
import multipart from '@fastify/multipart'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Config } from './config.js'
import dashboardRoutes from './dashboard/routes.js'
import { ERROR_CATALOGUE } from './errors.js'
import { inferencePlugin } from './inference/plugin.js'
import { JOB_FAILURE_CODES } from './modules/jobs/failure-codes.js'
import { EvaluationObject, LineageObject, PredictionList } from './modules/models/model-schemas.js'
import { type Resolver, systemResolver } from './modules/webhooks/safe-delivery.js'
import { metricsPlugin } from './observability/metrics.js'
import { adminSessionPlugin } from './plugins/admin-session.js'
import { authPlugin } from './plugins/auth.js'
import { errorHandlerPlugin } from './plugins/error-handler.js'
import { idempotencyPlugin } from './plugins/idempotency.js'
import { dbPlugin, queuePlugin, redisPlugin, storagePlugin } from './plugins/infrastructure.js'
import { inputHygienePlugin } from './plugins/input-hygiene.js'
import { jobUpdatesPlugin } from './plugins/job-updates.js'
import { jsonBodyPlugin } from './plugins/json-body.js'
import { lookupCachePlugin } from './plugins/lookup-cache.js'
import { rateLimitPlugin } from './plugins/rate-limit.js'
import { loggerOptions, securityPlugin } from './plugins/security.js'
import { strictBodySchemaController } from './plugins/validation.js'
import healthRoutes from './routes/health.js'
import metricsRoutes from './routes/metrics.js'
import adminApiRoutes from './routes/v1/admin/index.js'
import adminRoutes from './routes/v1/admin.js'
import adminWorkerRoutes from './routes/v1/admin-workers.js'
import checkpointRoutes from './routes/v1/checkpoints.js'
import evaluationRoutes from './routes/v1/evaluations.js'
import fileRoutes from './routes/v1/files.js'
import jobRoutes from './routes/v1/fine_tuning/jobs.js'
import sweepRoutes from './routes/v1/fine_tuning/sweeps.js'
import modelRoutes from './routes/v1/models.js'
import { ErrorSchema } from './schemas/common.js'
import { EventObject, FileObject, JobObject, ModelObject, ProjectObject } from './schemas/objects.js'

export interface BuildOptions {
  config: Config
  adminToken: string
  logger?: boolean | object
  /** resolves webhook hosts at registration (tests inject one that plays a rebinding DNS server) */
  webhookResolver?: Resolver
}

/**
 * `req_` and 24 random hex digits. The bytes come from a block drawn 256 ids at a time: one randomBytes call
 * per request was 6.6 us of the API's CPU (scratch loop), a slice of the block 0.2 us.
 */
let idBlock = Buffer.alloc(0)
let idAt = 0
function requestId(): string {
  if (idAt >= idBlock.length) {
    idBlock = randomBytes(12 * 256)
    idAt = 0
  }
  idAt += 12
  return `req_${idBlock.toString('hex', idAt - 12, idAt)}`
}

const errorTable = Object.entries(ERROR_CATALOGUE)
  .map(([code, e]) => `| \`${code}\` | ${e.status} | ${e.description} |`)
  .join('\n')
const jobFailureTable = Object.entries(JOB_FAILURE_CODES)
  .map(([code, e]) => `| \`${code}\` | ${e.retryable ? 'yes' : 'no'} | ${e.description} |`)
  .join('\n')

export async function buildApp({
  config,
  adminToken,
  logger,
  webhookResolver,
}: BuildOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: loggerOptions(config, logger),
    genReqId: requestId,
    requestIdHeader: false,
    ajv: { customOptions: { removeAdditional: false, allErrors: true } },
    schemaController: strictBodySchemaController,
    connectionTimeout: config.connectionTimeoutMs,
    trustProxy: config.trustProxy as boolean | string,
    // Fine-tuned model ids contain colons; keep them intact in path params.
    routerOptions: { maxParamLength: 300 },
  }).withTypeProvider<TypeBoxTypeProvider>()

  app.decorate('config', config)
  app.decorate('adminToken', adminToken)
  app.decorate('webhookResolver', webhookResolver ?? systemResolver)
  app.addHook('onSend', async (req, reply) => {
    reply.header('x-request-id', req.id)
  })

  await app.register(errorHandlerPlugin)
  await app.register(jsonBodyPlugin)
  await app.register(securityPlugin)
  for (const schema of [ErrorSchema, ProjectObject, FileObject, ModelObject, JobObject, EventObject])
    app.addSchema(schema)
  for (const schema of [LineageObject, PredictionList, EvaluationObject]) app.addSchema(schema)

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Refit API',
        version: '0.1.0',
        description: `Fine-tuning as a service: upload datasets, fine-tune models by transfer learning, download the result.\n\nErrors are \`{"error": {"message", "type", "code", "param", "request_id", "details"}}\`. Codes:\n\n| code | status | meaning |\n|---|---|---|\n${errorTable}\n\nA failed job's \`error.code\` (with \`error.retryable\`) is one of:\n\n| code | retryable | meaning |\n|---|---|---|\n${jobFailureTable}`,
      },
      components: {
        securitySchemes: {
          projectKey: { type: 'http', scheme: 'bearer', description: 'Project API key (rk-…)' },
          adminToken: { type: 'http', scheme: 'bearer', description: 'Admin token, only on /v1/admin' },
          metricsToken: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN, only on /metrics' },
        },
      },
    },
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => (json.$id as string) || `def-${i}` },
    transform: ({ schema, url, route }) => {
      const auth = route.config?.auth
      const security =
        auth === 'admin'
          ? [{ adminToken: [] }]
          : auth === 'project'
            ? [{ projectKey: [] }]
            : auth === 'metrics'
              ? [{ adminToken: [] }, { metricsToken: [] }]
              : []
      return { schema: { ...schema, security } as typeof schema, url }
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
  await app.register(multipart, { limits: { fileSize: config.maxUploadBytes, files: 1 } })

  await app.register(dbPlugin)
  await app.register(redisPlugin)
  await app.register(lookupCachePlugin)
  await app.register(queuePlugin)
  await app.register(storagePlugin)
  await app.register(rateLimitPlugin)
  await app.register(jobUpdatesPlugin)
  await app.register(metricsPlugin)
  await app.register(inferencePlugin)
  await app.register(adminSessionPlugin)
  await app.register(authPlugin)
  await app.register(idempotencyPlugin)
  await app.register(inputHygienePlugin)

  await app.register(healthRoutes)
  await app.register(metricsRoutes)
  await app.register(adminRoutes)
  await app.register(adminWorkerRoutes)
  await app.register(adminApiRoutes)
  await app.register(dashboardRoutes)
  await app.register(fileRoutes)
  await app.register(modelRoutes)
  await app.register(evaluationRoutes)
  await app.register(checkpointRoutes)
  await app.register(jobRoutes)
  await app.register(sweepRoutes)
  await app.register(import('./routes/v1/webhooks.js'))
  return app
}
