import type { Queue } from 'bullmq'
import type { Redis } from 'ioredis'
import type { Config } from '../src/config.js'
import type { Db } from '../src/db/client.js'
import type { DeliveryPayload, FilePayload, TrainingPayload } from '../src/queue/catalog.js'
import type { Storage } from '../src/storage/storage.js'

export interface Logger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
  /** a logger whose lines all carry `bindings` (pino's child loggers), e.g. `{ jobId }` */
  child?(bindings: Record<string, unknown>): Logger
}

/** What the worker's processors share: built once in worker.ts from the Config. */
export interface WorkerDeps {
  config: Config
  db: Db
  redis: Redis
  storage: Storage
  /** `training` is the cpu resource class's queue, `trainingGpu` the gpu one's */
  queues: {
    training: Queue<TrainingPayload>
    trainingGpu: Queue<TrainingPayload>
    files: Queue<FilePayload>
    webhooks: Queue<DeliveryPayload>
  }
  log: Logger
  /**
   * the backend this worker's training processes run on, proven by its self-test at start; absent (tests that
   * drive a processor without a worker): the configured TF_BACKEND
   */
  backend?: string
  /** pings live event streams that `jobId` changed (after the write, never instead of it) */
  notify(jobId: string): void
}
