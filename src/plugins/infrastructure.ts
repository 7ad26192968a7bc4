// Shared handles as named plugins: the database, Redis, queue producers and storage. Each is created
// from the Config passed to the app (never from process.env) and closed in onClose.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Redis } from 'ioredis'
import type { Config } from '../config.js'
import { createDb, type Db } from '../db/client.js'
import { closeQueues, openQueues, type Queues } from '../queue/registry.js'
import { createStorage } from '../storage/create-storage.js'
import type { Storage } from '../storage/storage.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    adminToken: string
    db: Db
    redis: Redis
    /** a producer for every queue of the registry (queue/registry.ts); `training` is the cpu class's, `trainingGpu` the gpu one's */
    queues: Queues
    storage: Storage
  }
}

export const dbPlugin = fp(
  async (app: FastifyInstance) => {
    const db = createDb(app.config.databaseUrl)
    app.decorate('db', db)
    app.addHook('onClose', async () => db.$disconnect())
  },
  { name: 'db' },
)

export const redisPlugin = fp(
  async (app: FastifyInstance) => {
    // Commands fail fast while Redis is down (the API answers 503) instead of piling up.
    const redis = new Redis(app.config.redisUrl, {
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      lazyConnect: true,
    })
    redis.on('error', (err) => app.log.debug({ err }, 'redis connection error'))
    await redis.connect().catch((err) => app.log.warn({ err: err.message }, 'redis is not reachable yet'))
    app.decorate('redis', redis)
    app.addHook('onClose', async () => {
      redis.disconnect()
    })
  },
  { name: 'redis' },
)

export const queuePlugin = fp(
  async (app: FastifyInstance) => {
    const queues = openQueues(app.config, {
      failFast: true,
      onError: (err) => app.log.debug({ err: err.message }, 'queue error'),
    })
    app.decorate('queues', queues)
    app.addHook('onClose', async () => closeQueues(queues))
  },
  { name: 'queues' },
)

export const storagePlugin = fp(
  async (app: FastifyInstance) => {
    const storage = await createStorage(app.config)
    await storage.init()
    app.decorate('storage', storage)
  },
  { name: 'storage' },
)
