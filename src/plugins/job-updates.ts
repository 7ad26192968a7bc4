// One Redis subscriber per API process, fanned out to the live event streams that follow each job, and
// to the streams opened with an API key that has just been revoked.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { jobUpdatesChannel, keyRevokedChannel } from '../modules/jobs/job-updates.js'

export interface JobUpdates {
  /** calls `listener` whenever any process reports that `jobId` changed; returns the unsubscribe */
  on(jobId: string, listener: () => void): () => void
  /** registers an open stream's close function, called when the app closes; returns the unregister */
  track(close: () => void): () => void
  /** calls `listener` when any process revokes API key `keyId`; returns the unsubscribe */
  onKeyRevoked(keyId: string, listener: () => void): () => void
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
    const revokeListeners = new Map<string, Set<() => void>>()
    const revokedChannel = keyRevokedChannel(app.config.queuePrefix)
    const subscriber = app.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, lazyConnect: true })
    subscriber.on('error', (err) => app.log.debug({ err: err.message }, 'job-updates subscriber error'))
    subscriber.on('message', (channel: string, id: string) => {
      const map = channel === revokedChannel ? revokeListeners : listeners
      for (const fn of [...(map.get(id) ?? [])]) fn()
    })
    // ioredis re-subscribes after a reconnect by itself.
    subscriber
      .connect()
      .then(() => subscriber.subscribe(jobUpdatesChannel(app.config.queuePrefix), revokedChannel))
      .catch((err) => app.log.warn({ err: err.message }, 'job-updates: Redis not reachable yet; streams poll'))
    const listen = (map: Map<string, Set<() => void>>, id: string, listener: () => void) => {
      const set = map.get(id) ?? new Set<() => void>()
      map.set(id, set)
      set.add(listener)
      return () => {
        set.delete(listener)
        if (!set.size) map.delete(id)
      }
    }
    app.decorate('jobUpdates', {
      on: (jobId, listener) => listen(listeners, jobId, listener),
      onKeyRevoked: (keyId, listener) => listen(revokeListeners, keyId, listener),
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
