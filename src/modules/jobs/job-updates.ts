// "Job X changed" pings on Redis. Writers (worker, API) publish after they write to PostgreSQL; every
// API process listens and re-reads the job from PostgreSQL for its live streams. The database stays
// the source of truth (order, no duplicates, resumable by event seq); Redis only makes it immediate,
// and a lost ping is covered by the streams' own periodic re-read.
import type { Redis } from 'ioredis'

export const jobUpdatesChannel = (prefix: string) => `${prefix}:job-updates`

export function notifyJobChanged(redis: Redis, prefix: string, jobId: string): void {
  redis.publish(jobUpdatesChannel(prefix), jobId).catch(() => {
    // Redis down: live streams fall back to their periodic re-read.
  })
}
