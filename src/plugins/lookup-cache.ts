// Per-process cache of the rows every prediction reads (the API key behind the bearer token, the model), so
// the request path does not wait on PostgreSQL twice per call. Several API processes may run: a revoke or
// delete in any of them sets a new random epoch in Redis (`<prefix>:lookups:epoch`) before it answers, and
// every request reads that epoch once (one GET, far cheaper than the queries it saves) and drops the cache
// when it changed. So a revoked key or deleted model is refused on the very next request, in every process.
// When Redis cannot answer, nothing is served from the cache: lookups go to PostgreSQL, as without a cache.
import { randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import { AppError } from '../errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    lookups: LookupCache
  }
}

/** Entries older than this are read again even when no revoke or delete happened (bounds other drift). */
export const LOOKUP_TTL_MS = 60_000
/** Entries kept per process; the oldest go first beyond it. */
export const LOOKUP_MAX_ENTRIES = 10_000

/** The Redis key holding the lookup epoch: any process that deletes a looked-up row bumps it. */
export const lookupEpochKey = (queuePrefix: string) => `${queuePrefix}:lookups:epoch`

export class LookupCache {
  private epoch: string | null = null
  private readonly entries = new Map<string, { value: unknown; at: number }>()
  private readonly epochs = new WeakMap<object, Promise<string | null>>()

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly ttlMs = LOOKUP_TTL_MS,
  ) {}

  /** The epoch in force for this request (read once per request); null when Redis cannot say. */
  private epochOf(req: FastifyRequest): Promise<string | null> {
    let e = this.epochs.get(req)
    if (!e) {
      e = this.redis.get(this.key).then(
        (v) => v ?? 'initial',
        () => null,
      )
      this.epochs.set(req, e)
    }
    return e
  }

  /**
   * `load()`'s value, from this process's cache when it was loaded in the current epoch less than the TTL ago.
   * Errors and null (not found) are not cached: something created later is found at once.
   */
  async get<T>(req: FastifyRequest, name: string, load: () => Promise<T>): Promise<T> {
    const epoch = await this.epochOf(req)
    if (epoch === null) return load()
    if (epoch !== this.epoch) {
      this.entries.clear()
      this.epoch = epoch
    }
    const hit = this.entries.get(name)
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.value as T
    const value = await load()
    // an invalidation may have landed while loading: keep the value only if the epoch is still this one
    if (this.epoch === epoch && value !== null && value !== undefined) {
      if (this.entries.size >= LOOKUP_MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value!)
      this.entries.set(name, { value, at: Date.now() })
    }
    return value
  }

  /**
   * Makes every process drop its cache: call after the revoke or delete is committed, before answering. Throws
   * (503) when Redis cannot take the new epoch, so the caller retries rather than leaving other processes stale.
   */
  async invalidate(): Promise<void> {
    this.entries.clear()
    this.epoch = null
    try {
      await this.redis.set(this.key, randomUUID())
    } catch {
      throw new AppError(
        'service_unavailable',
        'The change is saved, but other API processes could not be told yet (Redis is unreachable); repeat the request.',
        { headers: { 'retry-after': '5' } },
      )
    }
  }
}

export const lookupCachePlugin = fp(
  async (app: FastifyInstance) => {
    app.decorate('lookups', new LookupCache(app.redis, lookupEpochKey(app.config.queuePrefix)))
  },
  { name: 'lookup-cache', dependencies: ['redis'] },
)
