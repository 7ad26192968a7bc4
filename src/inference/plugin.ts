// The inference pool and the evaluations queue producer (the registry's, see queues plugin) as a named plugin. Children are forked on the
// first prediction, not at start, so building the app (tests, OpenAPI generation) forks nothing.
import type { Queue } from 'bullmq'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { EvaluationPayload } from '../queue/catalog.js'
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
      graph: app.config.frozenGraph,
      log: app.log,
      memory: {
        limitBytes: app.config.inferenceMemoryBytes,
        recycleBytes: Math.round((app.config.inferenceMemoryBytes * app.config.inferenceRecyclePercent) / 100),
      },
    })
    app.decorate('inference', pool)
    app.decorate('evaluationsQueue', app.queues.evaluations)
    app.addHook('onClose', async () => {
      await pool.close()
    })
  },
  { name: 'inference', dependencies: ['queues'] },
)
