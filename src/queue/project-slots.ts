// Per-project in-flight limits across every worker process, in Redis. Open-source BullMQ has no job
// groups, so fairness between tenants is built here: a processor takes one of its project's slots before
// it works and, when none is free, moves its job back to delayed for a moment instead of holding a worker
// slot another project could use.
//
// A slot is a member of a sorted set scored by its expiry, so a worker that dies while holding one
// frees it after `ttlMs` without anyone cleaning up; a live holder renews it. Take, renew and give back
// are single Lua scripts, hence atomic between processes.
import type { Redis } from 'ioredis'

const TAKE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0`

/** Names the slot sets: `<prefix>:slots:<kind>:<projectId>`. */
export const slotKey = (prefix: string, kind: string, projectId: string) => `${prefix}:slots:${kind}:${projectId}`

export interface SlotHandle {
  /** gives the slot back (idempotent) */
  release(): Promise<void>
}

/**
 * Takes one of `cap` slots of `key` for `holder` (taking it again as the same holder renews it).
 * Returns null when all are held; else a handle that keeps the slot renewed until released.
 */
export async function takeSlot(
  redis: Redis,
  key: string,
  holder: string,
  cap: number,
  ttlMs = 60_000,
): Promise<SlotHandle | null> {
  const take = () => {
    const now = Date.now()
    return redis.eval(TAKE, 1, key, now, now + ttlMs, holder, cap, ttlMs * 2) as Promise<number>
  }
  if ((await take()) !== 1) return null
  // Renewed at a third of its life, so a slow validation or delivery never loses it while alive.
  const renew = setInterval(() => void take().catch(() => {}), Math.max(1000, Math.floor(ttlMs / 3)))
  renew.unref()
  let released = false
  return {
    async release() {
      if (released) return
      released = true
      clearInterval(renew)
      await redis.zrem(key, holder).catch(() => {})
    },
  }
}

/** How long a job refused a slot waits before it asks again: short, jittered so waiters do not march in step. */
export function slotRetryDelayMs(base = 1000): number {
  return base + Math.floor(Math.random() * base)
}
