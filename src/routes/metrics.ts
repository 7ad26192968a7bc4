// GET /metrics for Prometheus. Not public: queue depths and job timings describe every project's
// activity. It takes the admin token, or METRICS_TOKEN when set, so a scraper need not hold the admin
// token. (Declared `public` to the auth plugin, which only knows admin routes; the token check is here.)
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { AppError } from '../errors.js'
import { tokenEquals } from '../modules/auth/api-keys.js'
import { errorResponses } from '../schemas/common.js'
import { prometheusExample } from '../schemas/examples.js'

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/metrics',
    {
      config: { auth: 'public' },
      schema: {
        tags: ['admin'],
        operationId: 'getMetrics',
        summary: 'Prometheus metrics (admin token or METRICS_TOKEN)',
        description:
          'Text exposition format: HTTP latency by route and status, BullMQ queue depth per queue and state, fine-tuning job durations by method and status, training samples per second per running job and worker, live workers. Authorization: `Bearer <admin token>` or `Bearer <METRICS_TOKEN>`.',
        security: [{ adminToken: [] }, { metricsToken: [] }],
        produces: ['text/plain'],
        response: {
          200: {
            description: 'Prometheus text format 0.0.4',
            content: { 'text/plain': { schema: Type.String(), example: prometheusExample } },
          },
          ...errorResponses(),
        },
      },
    },
    async (req, reply) => {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')
      if (!m)
        throw new AppError('missing_authorization', 'Send `Authorization: Bearer <admin token or METRICS_TOKEN>`.')
      const ok =
        tokenEquals(m[1], app.adminToken) || (!!app.config.metricsToken && tokenEquals(m[1], app.config.metricsToken))
      if (!ok) throw new AppError('invalid_api_key', 'The token is neither the admin token nor METRICS_TOKEN.')
      reply.type(app.metrics.contentType)
      return app.metrics.text()
    },
  )
}

export default routes
