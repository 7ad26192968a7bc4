// Queue health: BullMQ job counts of every queue in the registry (queue/registry.ts).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Queue } from 'bullmq'
import type { FastifyInstance } from 'fastify'
import { QUEUE_KEYS, QUEUE_REGISTRY } from '../../../queue/registry.js'
import { errorResponses, listOf } from '../../../schemas/common.js'
import { jsonResponse } from '../../../schemas/examples.js'
import { QueueHealth, queuesExample } from './schemas.js'

/** The API's producers for every queue in the registry, in its order. */
export function adminQueues(app: FastifyInstance): { name: string; queue: Queue }[] {
  return QUEUE_KEYS.map((k) => ({ name: QUEUE_REGISTRY[k].name, queue: app.queues[k] as Queue }))
}

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/admin/queues',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListQueues',
        summary: 'Queue health: BullMQ job counts per queue (waiting, active, delayed, failed, completed)',
        response: { 200: jsonResponse(listOf(QueueHealth), queuesExample), ...errorResponses() },
      },
    },
    async () => {
      const data = await Promise.all(
        adminQueues(app).map(async ({ name, queue }) => {
          const [c, paused] = await Promise.all([
            queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized'),
            queue.isPaused(),
          ])
          return {
            name,
            prefix: app.config.queuePrefix,
            paused,
            counts: {
              waiting: c.waiting ?? 0,
              active: c.active ?? 0,
              delayed: c.delayed ?? 0,
              failed: c.failed ?? 0,
              completed: c.completed ?? 0,
              prioritized: c.prioritized ?? 0,
            },
          }
        }),
      )
      return { object: 'list' as const, data, has_more: false }
    },
  )
}

export default routes
