// Request rate limit per API key (per client address when the request carries no valid key), counted in
// Redis so every API process shares one budget. It runs as the first onRequest hook after load shedding:
// requests with a bad key are counted against their address before auth refuses them, so guessing keys
// is throttled too. Over the limit: 429 `rate_limited` in our envelope with Retry-After.
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../errors.js'
import { identifyCaller } from './auth.js'

/** Probes must never be throttled: a load balancer would take a healthy instance out. */
const UNLIMITED = new Set(['/healthz', '/readyz'])

/** The bucket a request counts against: `key:<api key id>`, `admin`, or `ip:<address>`. */
export async function rateLimitKey(app: FastifyInstance, req: FastifyRequest): Promise<string> {
  const auth = req.routeOptions.config?.auth ?? 'public'
  if (auth !== 'public') {
    // A database error here is left for the auth hook to report (503); count the address meanwhile.
    const caller = await identifyCaller(app, req).catch(() => null)
    if (caller?.kind === 'project') return `key:${caller.keyId}`
    if (caller?.kind === 'admin') return 'admin'
  }
  return `ip:${req.ip}`
}

export const rateLimitPlugin = fp(
  async (app: FastifyInstance) => {
    const perMinute = app.config.rateLimitPerMinute
    if (perMinute === 0) return
    await app.register(rateLimit, {
      global: false,
      max: perMinute,
      timeWindow: 60_000,
      redis: app.redis,
      nameSpace: `${app.config.queuePrefix}:ratelimit:`,
      // Redis down: serve (the routes that need Redis answer 503 themselves) rather than refuse everything.
      skipOnError: true,
      keyGenerator: (req) => rateLimitKey(app, req),
      allowList: (req) => UNLIMITED.has(req.routeOptions.url ?? ''),
      addHeadersOnExceeding: { 'x-ratelimit-limit': true, 'x-ratelimit-remaining': true, 'x-ratelimit-reset': true },
      errorResponseBuilder: (_req, ctx) => {
        const seconds = Math.max(1, Math.ceil(ctx.ttl / 1000))
        return new AppError(
          'rate_limited',
          `Rate limit of ${ctx.max} requests per minute exceeded; retry in ${seconds} s.`,
          {
            headers: { 'retry-after': String(seconds) },
          },
        )
      },
    })
    // A root-level hook rather than per-route: it must run before the auth hook, registered after this.
    app.addHook('onRequest', app.rateLimit())
  },
  { name: 'rate-limit', dependencies: ['redis', 'db'] },
)
