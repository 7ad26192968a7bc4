// What start-up and readiness say when a dependency is missing or misconfigured: what is wrong, and the
// command or setting that fixes it. `npm start` prints these and exits non-zero for a missing PostgreSQL
// or Redis; a Redis that may evict keys fails /readyz and is warned about at start.
import { Redis } from 'ioredis'

/** A clear redacted form of a connection URL (no password). */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return raw
  }
}

export function postgresUnreachableMessage(databaseUrl: string, err: Error): string {
  return [
    `cannot prepare PostgreSQL at ${redactUrl(databaseUrl)}: ${err.message.split('\n')[0]}`,
    '  Is PostgreSQL running and reachable? Start it (e.g. `pg_ctlcluster 15 main start`, or',
    '  `docker compose up -d postgres`), or point DATABASE_URL at a server this process can reach.',
  ].join('\n')
}

export function redisUnreachableMessage(redisUrl: string, err: Error): string {
  return [
    `cannot reach Redis at ${redactUrl(redisUrl)}: ${err.message.split('\n')[0]}`,
    '  Is Redis running and reachable? Start it (e.g. `redis-server --appendonly yes --maxmemory-policy noeviction`,',
    '  or `docker compose up -d redis`), or point REDIS_URL at a server this process can reach.',
  ].join('\n')
}

export function redisPolicyMessage(policy: string): string {
  return (
    `Redis maxmemory-policy is "${policy}", not "noeviction": under memory pressure Redis would evict queue keys and ` +
    'jobs would be lost. Fix: `redis-cli CONFIG SET maxmemory-policy noeviction` and keep it in redis.conf ' +
    '(`maxmemory-policy noeviction`) or on the command line (`redis-server --maxmemory-policy noeviction`).'
  )
}

/**
 * Null when Redis keeps every key (noeviction) or cannot tell us (managed Redis often disables CONFIG),
 * else the message saying what is wrong and how to fix it.
 */
export async function redisPolicyProblem(redis: Pick<Redis, 'config'>): Promise<string | null> {
  let reply: unknown
  try {
    reply = await (redis.config as (op: 'GET', key: string) => Promise<unknown>)('GET', 'maxmemory-policy')
  } catch (err) {
    if (/unknown command|not allowed|NOPERM|disabled/i.test((err as Error).message)) return null
    throw err
  }
  const pair = reply as string[]
  const policy = Array.isArray(pair) && pair.length >= 2 ? String(pair[1]) : null
  if (policy === null || policy === 'noeviction') return null
  return redisPolicyMessage(policy)
}

/** Start-up probe of Redis: null when it answers (with any policy problem in `warning`), else why not. */
export async function probeRedis(
  redisUrl: string,
  timeoutMs = 5000,
): Promise<{ error: string | null; warning: string | null }> {
  const redis = new Redis(redisUrl, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    connectTimeout: timeoutMs,
    retryStrategy: () => null,
  })
  redis.on('error', () => {})
  try {
    await redis.connect()
    await redis.ping()
    return { error: null, warning: await redisPolicyProblem(redis).catch(() => null) }
  } catch (err) {
    return { error: redisUnreachableMessage(redisUrl, err as Error), warning: null }
  } finally {
    redis.disconnect()
  }
}
