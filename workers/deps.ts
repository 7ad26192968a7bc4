import type { Queue } from 'bullmq'
import type { Redis } from 'ioredis'
import type { Config } from '../src/config.js'
import type { Db } from '../src/db/client.js'
import type { FilePayload, TrainingPayload } from '../src/queue/catalog.js'
import type { LocalStorage } from '../src/storage/local-storage.js'

export interface Logger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

/** What the worker's processors share: built once in worker.ts from the Config. */
export interface WorkerDeps {
  config: Config
  db: Db
  redis: Redis
  storage: LocalStorage
  queues: { training: Queue<TrainingPayload>; files: Queue<FilePayload> }
  log: Logger
  /** pings live event streams that `jobId` changed (after the write, never instead of it) */
  notify(jobId: string): void
}
