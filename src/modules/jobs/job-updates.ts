// "Job X changed" pings on Redis. Writers (worker, API) publish after they write to PostgreSQL; every
// API process listens and re-reads the job from PostgreSQL for its live streams. The database stays
// the source of truth (order, no duplicates, resumable by event seq); Redis only makes it immediate,
// and a lost ping is covered by the streams' own periodic re-read.
import type { Redis } from 'ioredis'

export const jobUpdatesChannel = (prefix: string) => `${prefix}:job-updates`
/** "API key X was revoked": every API process closes the live streams opened with it. */
export const keyRevokedChannel = (prefix: string) => `${prefix}:key-revoked`

export function notifyKeyRevoked(redis: Redis, prefix: string, keyId: string): Promise<unknown> {
  // Redis down: the streams' own periodic check of their key closes them a little later.
  return redis.publish(keyRevokedChannel(prefix), keyId).catch(() => {})
}

export function notifyJobChanged(redis: Redis, prefix: string, jobId: string): void {
  redis.publish(jobUpdatesChannel(prefix), jobId).catch(() => {
    // Redis down: live streams fall back to their periodic re-read.
  })
}
