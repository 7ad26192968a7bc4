// Shared handles as named plugins: the database, Redis, queue producers and storage. Each is created
// from the Config passed to the app (never from process.env) and closed in onClose.
import { Queue } from 'bullmq'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Redis } from 'ioredis'
import type { Config } from '../config.js'
import { createDb, type Db } from '../db/client.js'
import {
  type DeliveryPayload,
  type FilePayload,
  QUEUES,
  redisConnection,
  type TrainingPayload,
} from '../queue/catalog.js'
import { createStorage, type Storage } from '../storage/storage.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    adminToken: string
    db: Db
    redis: Redis
    /** `training` is the cpu resource class's queue, `trainingGpu` the gpu one's */
    queues: {
      training: Queue<TrainingPayload>
      trainingGpu: Queue<TrainingPayload>
      files: Queue<FilePayload>
      /** webhook deliveries: a job cancelled through the API is announced from here */
      webhooks: Queue<DeliveryPayload>
    }
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
    const connection = redisConnection(app.config.redisUrl)
    const opts = {
      connection: { ...connection, maxRetriesPerRequest: 1, enableOfflineQueue: false },
      prefix: app.config.queuePrefix,
    }
    const training = new Queue<TrainingPayload>(QUEUES.training, opts)
    const trainingGpu = new Queue<TrainingPayload>(QUEUES.trainingGpu, opts)
    const files = new Queue<FilePayload>(QUEUES.files, opts)
    const webhooks = new Queue<DeliveryPayload>(QUEUES.webhooks, opts)
    for (const q of [training, trainingGpu, files, webhooks])
      q.on('error', (err) => app.log.debug({ err: err.message }, 'queue error'))
    app.decorate('queues', { training, trainingGpu, files, webhooks })
    app.addHook('onClose', async () => {
      await Promise.allSettled([training.close(), trainingGpu.close(), files.close(), webhooks.close()])
    })
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
