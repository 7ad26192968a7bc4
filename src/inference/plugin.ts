// The inference pool and the evaluations queue producer as a named plugin. Children are forked on the
// first prediction, not at start, so building the app (tests, OpenAPI generation) forks nothing.
import { Queue } from 'bullmq'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { type EvaluationPayload, QUEUES, redisConnection } from '../queue/catalog.js'
import { InferencePool } from './pool.js'

declare module 'fastify' {
  interface FastifyInstance {
    inference: InferencePool
    evaluationsQueue: Queue<EvaluationPayload>
  }
}

export const inferencePlugin = fp(
  async (app: FastifyInstance) => {
    const pool = new InferencePool({
      processes: app.config.inferenceProcesses,
      cacheBytes: app.config.inferenceCacheMb * 1024 * 1024,
      backend: app.config.tfBackend,
      log: app.log,
      memory: {
        limitBytes: app.config.inferenceMemoryBytes,
        recycleBytes: Math.round((app.config.inferenceMemoryBytes * app.config.inferenceRecyclePercent) / 100),
      },
    })
    const queue = new Queue<EvaluationPayload>(QUEUES.evaluations, {
      connection: { ...redisConnection(app.config.redisUrl), maxRetriesPerRequest: 1, enableOfflineQueue: false },
      prefix: app.config.queuePrefix,
    })
    queue.on('error', (err) => app.log.debug({ err: err.message }, 'queue error'))
    app.decorate('inference', pool)
    app.decorate('evaluationsQueue', queue)
    app.addHook('onClose', async () => {
      await Promise.allSettled([pool.close(), queue.close()])
    })
  },
  { name: 'inference' },
)
