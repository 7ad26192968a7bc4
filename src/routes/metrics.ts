// GET /metrics for Prometheus. Not public: queue depths and job timings describe every project's
// activity. It takes the admin token, or METRICS_TOKEN when set (auth kind `metrics`), so a scraper
// need not hold the admin token.
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { errorResponses } from '../schemas/common.js'
import { prometheusExample } from '../schemas/examples.js'

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/metrics',
    {
      config: { auth: 'metrics' },
      schema: {
        tags: ['admin'],
        operationId: 'getMetrics',
        summary: 'Prometheus metrics (admin token or METRICS_TOKEN)',
        description:
          'Text exposition format: HTTP latency by route and status, BullMQ queue depth per queue and state, fine-tuning job durations by method and status, training samples per second per running job and worker, live workers. Authorization: `Bearer <admin token>` or `Bearer <METRICS_TOKEN>`.',
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
    async (_req, reply) => {
      reply.type(app.metrics.contentType)
      return app.metrics.text()
    },
  )
}

export default routes
