// One Redis subscriber per API process, fanned out to the live event streams that follow each job.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { jobUpdatesChannel } from '../modules/jobs/job-updates.js'

export interface JobUpdates {
  /** calls `listener` whenever any process reports that `jobId` changed; returns the unsubscribe */
  on(jobId: string, listener: () => void): () => void
  /** registers an open stream's close function, called when the app closes; returns the unregister */
  track(close: () => void): () => void
}

declare module 'fastify' {
  interface FastifyInstance {
    jobUpdates: JobUpdates
  }
}

export const jobUpdatesPlugin = fp(
  async (app: FastifyInstance) => {
    const listeners = new Map<string, Set<() => void>>()
    const openStreams = new Set<() => void>()
    const subscriber = app.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, lazyConnect: true })
    subscriber.on('error', (err) => app.log.debug({ err: err.message }, 'job-updates subscriber error'))
    subscriber.on('message', (_channel: string, jobId: string) => {
      for (const fn of listeners.get(jobId) ?? []) fn()
    })
    // ioredis re-subscribes after a reconnect by itself.
    subscriber
      .connect()
      .then(() => subscriber.subscribe(jobUpdatesChannel(app.config.queuePrefix)))
      .catch((err) => app.log.warn({ err: err.message }, 'job-updates: Redis not reachable yet; streams poll'))
    app.decorate('jobUpdates', {
      on(jobId, listener) {
        const set = listeners.get(jobId) ?? new Set<() => void>()
        listeners.set(jobId, set)
        set.add(listener)
        return () => {
          set.delete(listener)
          if (!set.size) listeners.delete(jobId)
        }
      },
      track(close) {
        openStreams.add(close)
        return () => openStreams.delete(close)
      },
    } satisfies JobUpdates)
    app.addHook('preClose', async () => {
      for (const close of [...openStreams]) close()
    })
    app.addHook('onClose', async () => {
      subscriber.disconnect()
    })
  },
  { name: 'job-updates', dependencies: ['redis'] },
)
