// One Redis subscriber per API process, fanned out to the live event streams that follow each job, and
// to the streams opened with an API key that has just been revoked. The revocation message is the fast
// path (a revoked key's streams close within milliseconds on every process); the safety net for a lost
// message (Redis down at revocation, a subscriber reconnecting) is one query per process every
// KEY_RECHECK_MS for all the keys that have streams open here, not a read per stream.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { jobUpdatesChannel, keyRevokedChannel } from '../modules/jobs/job-updates.js'

export interface JobUpdates {
  /** calls `listener` whenever any process reports that `jobId` changed; returns the unsubscribe */
  on(jobId: string, listener: () => void): () => void
  /** registers an open stream's close function, called when the app closes; returns the unregister */
  track(close: () => void): () => void
  /** calls `listener` when any process revokes API key `keyId` (or it is found revoked); returns the unsubscribe */
  onKeyRevoked(keyId: string, listener: () => void): () => void
  /** keys with streams open in this process, and how many safety-net queries of them ran */
  keyWatch(): { keys: number; checks: number }
}

/** How often one query checks every key with streams open in this process (in case a revocation message was lost). */
export const KEY_RECHECK_MS = 5_000

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
    // Subscribed at once, not after a first connect: the command waits in the offline queue until the
    // connection is ready, however many attempts that takes (a first connect that timed out on a busy
    // start used to leave the process without a subscription for good: revocations and job pings never
    // arrived, streams fell back to polling). ioredis re-subscribes after a reconnect by itself.
    const subscriber = app.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, lazyConnect: false })
    subscriber.on('error', (err) => app.log.debug({ err: err.message }, 'job-updates subscriber error'))
    subscriber.on('message', (channel: string, id: string) => {
      if (channel === revokedChannel) return revoked(id)
      for (const fn of [...(listeners.get(id) ?? [])]) fn()
    })
    subscriber
      .subscribe(jobUpdatesChannel(app.config.queuePrefix), revokedChannel)
      .catch((err) => app.log.warn({ err: err.message }, 'job-updates: could not subscribe; streams poll'))
    const listen = (map: Map<string, Set<() => void>>, id: string, listener: () => void) => {
      const set = map.get(id) ?? new Set<() => void>()
      map.set(id, set)
      set.add(listener)
      return () => {
        set.delete(listener)
        if (!set.size) map.delete(id)
      }
    }
    const revoked = (keyId: string) => {
      for (const fn of [...(revokeListeners.get(keyId) ?? [])]) fn()
    }
    let checks = 0
    let checking = false
    const recheck = setInterval(() => {
      const ids = [...revokeListeners.keys()]
      if (!ids.length || checking) return
      checking = true
      checks++
      app.db.apiKey
        .findMany({ where: { id: { in: ids }, revokedAt: null }, select: { id: true } })
        .then((live) => {
          const ok = new Set(live.map((k) => k.id))
          for (const id of ids) if (!ok.has(id)) revoked(id)
        })
        // PostgreSQL unreachable: the next round tries again; the streams' own requests fail meanwhile
        .catch((err) => app.log.debug({ err: err.message }, 'stream key re-check failed'))
        .finally(() => {
          checking = false
        })
    }, KEY_RECHECK_MS)
    recheck.unref()
    app.decorate('jobUpdates', {
      on: (jobId, listener) => listen(listeners, jobId, listener),
      onKeyRevoked: (keyId, listener) => listen(revokeListeners, keyId, listener),
      keyWatch: () => ({ keys: revokeListeners.size, checks }),
      track(close) {
        openStreams.add(close)
        return () => openStreams.delete(close)
      },
    } satisfies JobUpdates)
    app.addHook('preClose', async () => {
      for (const close of [...openStreams]) close()
    })
    app.addHook('onClose', async () => {
      clearInterval(recheck)
      subscriber.disconnect()
    })
  },
  { name: 'job-updates', dependencies: ['redis'] },
)
