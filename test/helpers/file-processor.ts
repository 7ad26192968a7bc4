// The worker's file processor called in the test process, for tests that run no worker: it validates an
// uploaded file exactly as a `files` queue job would.
import type { Job } from 'bullmq'
import type { FastifyInstance } from 'fastify'
import type { WorkerDeps } from '../../workers/deps.js'
import { createFileProcessor } from '../../workers/file-processor.js'

const silent = { info() {}, warn() {}, error() {} }

export function fileProcessorFor(app: FastifyInstance): (fileId: string) => Promise<unknown> {
  const deps: WorkerDeps = {
    config: app.config,
    db: app.db,
    redis: app.redis,
    storage: app.storage,
    queues: app.queues,
    log: silent,
    notify: () => {},
  }
  const processor = createFileProcessor(deps)
  // A queue job as BullMQ hands it over: the processor reads attempts to tell a last failure from a retry.
  return (fileId) => processor({ data: { fileId }, opts: {}, attemptsMade: 0 } as unknown as Job)
}
