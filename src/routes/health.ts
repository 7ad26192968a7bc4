import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { redisPolicyProblem } from '../observability/startup-checks.js'
import { jsonResponse, readinessExample } from '../schemas/examples.js'

const Check = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('down')]),
  error: Type.Optional(Type.String()),
})

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/healthz',
    {
      config: { auth: 'public' },
      schema: {
        tags: ['health'],
        operationId: 'getHealth',
        summary: 'Liveness: the process answers',
        response: { 200: jsonResponse(Type.Object({ status: Type.Literal('ok') }), { status: 'ok' }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  )

  app.get(
    '/readyz',
    {
      config: { auth: 'public' },
      schema: {
        tags: ['health'],
        operationId: 'getReadiness',
        summary: 'Readiness: PostgreSQL and Redis answer, and Redis never evicts keys (maxmemory-policy noeviction)',
        response: {
          200: jsonResponse(
            Type.Object({ status: Type.Literal('ok'), checks: Type.Object({ database: Check, redis: Check }) }),
            readinessExample,
          ),
          503: jsonResponse(
            Type.Object({
              status: Type.Literal('unavailable'),
              checks: Type.Object({ database: Check, redis: Check }),
            }),
            {
              status: 'unavailable',
              checks: {
                database: { status: 'ok' },
                redis: { status: 'down', error: 'connect ECONNREFUSED 127.0.0.1:6379: is Redis running?' },
              },
            },
            'PostgreSQL or Redis is down, or Redis may evict keys',
          ),
        },
      },
    },
    async (_req, reply) => {
      const probe = async (fn: () => Promise<unknown>) => {
        try {
          await Promise.race([
            fn(),
            new Promise((_, rej) => setTimeout(() => rej(new Error('timed out after 2 s')), 2000)),
          ])
          return { status: 'ok' as const }
        } catch (err) {
          return { status: 'down' as const, error: (err as Error).message.split('\n')[0] }
        }
      }
      const [database, redis] = await Promise.all([
        probe(() => app.db.$queryRaw`SELECT 1`),
        probe(async () => {
          await app.redis.ping()
          // A Redis that may evict keys would silently lose jobs: not ready, and say how to fix it.
          const problem = await redisPolicyProblem(app.redis)
          if (problem) throw new Error(problem)
        }),
      ])
      const ok = database.status === 'ok' && redis.status === 'ok'
      if (!ok) return reply.status(503).send({ status: 'unavailable' as const, checks: { database, redis } })
      return { status: 'ok' as const, checks: { database, redis } }
    },
  )
}

export default routes
