// Every route declares who may call it in `config.auth`: public, project (an API key), admin (the
// admin token) or metrics (the admin token or METRICS_TOKEN, for a Prometheus scraper). A route without
// the declaration refuses to start the app, so none is open by mistake.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../errors.js'
import { keyMatches, parseKeyPrefix, tokenEquals } from '../modules/auth/api-keys.js'
import { adminSessionOf, checkCsrf } from './admin-session.js'
import { sendError } from './error-handler.js'

export type RouteAuth = 'public' | 'project' | 'admin' | 'metrics'

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: RouteAuth
  }
  interface FastifyRequest {
    /** the calling project's id on project routes */
    projectId: string
    /** the id of the API key that authenticated the request, on project routes */
    apiKeyId: string
  }
}

function bearer(req: FastifyRequest): string {
  const header = req.headers.authorization
  if (!header) throw new AppError('missing_authorization', 'Send `Authorization: Bearer <key>`.')
  const m = /^Bearer\s+(\S+)$/i.exec(header)
  if (!m) throw new AppError('missing_authorization', 'The Authorization header must be `Bearer <key>`.')
  return m[1]
}

export const authPlugin = fp(
  async (app: FastifyInstance) => {
    app.decorateRequest('projectId', '')
    app.decorateRequest('apiKeyId', '')
    app.addHook('onRoute', (route) => {
      // Bull Board (mounted by src/dashboard) declares no config: all of it, HEAD twins included, is admin-only.
      if (route.url.startsWith('/admin/queues')) {
        route.config = { ...(route.config ?? {}), auth: 'admin' }
        return
      }
      // Fastify's own HEAD twins and the swagger/static routes are declared by their plugins.
      if (route.config?.auth || route.method === 'HEAD') return
      if (route.url.startsWith('/docs')) {
        route.config = { ...(route.config ?? {}), auth: 'public' }
        return
      }
      throw new Error(`route ${route.method} ${route.url} does not declare config.auth`)
    })
    app.addHook('onRequest', async (req, reply) => {
      const auth = req.routeOptions.config?.auth ?? 'public'
      if (auth === 'public') return
      if (auth === 'admin' && req.url.startsWith('/admin/queues')) {
        // Bull Board's routes have their own error handler: answer here, in our envelope. A browser that
        // opens the board without a session is sent to the sign-in page.
        try {
          return await authenticateAdmin(app, req)
        } catch (err) {
          if (req.method === 'GET' && req.headers.accept?.includes('text/html')) return reply.redirect('/admin')
          return sendError(req, reply, err)
        }
      }
      if (auth === 'admin') return authenticateAdmin(app, req)
      if (auth === 'metrics') return authenticateMetrics(app, req)
      bearer(req) // a missing or malformed header is its own error
      const caller = await identifyCaller(app, req)
      if (caller?.kind === 'admin')
        throw new AppError(
          'project_key_required',
          'The admin token only works on /v1/admin routes; use a project API key.',
        )
      if (!caller) throw new AppError('invalid_api_key', 'The API key is not valid or has been revoked.')
      req.projectId = caller.projectId
      req.apiKeyId = caller.keyId
      touchLastUsed(app, caller)
    })
  },
  { name: 'auth', dependencies: ['db'] },
)

/**
 * Admin routes take the admin token (`Authorization: Bearer`) or, without that header, the dashboard's
 * session cookie; a cookie call that changes state must also pass the CSRF check.
 */
async function authenticateAdmin(app: FastifyInstance, req: FastifyRequest) {
  if (!req.headers.authorization) {
    const session = await adminSessionOf(app, req)
    if (session) {
      checkCsrf(req, session)
      req.adminSession = session
      return
    }
  }
  bearer(req)
  const caller = await identifyCaller(app, req)
  if (caller?.kind === 'admin') return
  if (caller?.kind === 'project')
    throw new AppError('admin_required', 'This route needs the admin token, not a project API key.')
  throw new AppError('invalid_api_key', 'The admin token is not valid.')
}

/** The Prometheus scrape: the admin token, or METRICS_TOKEN so that a scraper need not hold the admin token. */
async function authenticateMetrics(app: FastifyInstance, req: FastifyRequest) {
  const token = bearer(req)
  if (app.config.metricsToken && tokenEquals(token, app.config.metricsToken)) return
  const caller = await identifyCaller(app, req)
  if (caller?.kind === 'admin') return
  if (caller?.kind === 'project')
    throw new AppError('admin_required', 'Metrics need the admin token or METRICS_TOKEN, not a project API key.')
  throw new AppError('invalid_api_key', 'The token is neither the admin token nor METRICS_TOKEN.')
}

/** Who a bearer token belongs to: the admin, a project's live key, or nobody (null). */
export type Caller = { kind: 'admin' } | { kind: 'project'; keyId: string; projectId: string; lastUsedAt: Date | null }

const callers = new WeakMap<FastifyRequest, Promise<Caller | null>>()

/**
 * Resolves the request's bearer token once per request (the rate limiter keys on it before the auth
 * hook checks it). The key row comes from the lookup cache, which a revoke in any API process drops, so a
 * revoked key stops working on the next request.
 */
export function identifyCaller(app: FastifyInstance, req: FastifyRequest): Promise<Caller | null> {
  let caller = callers.get(req)
  if (!caller) {
    caller = resolveToken(app, req, req.headers.authorization)
    callers.set(req, caller)
  }
  return caller
}

async function resolveToken(
  app: FastifyInstance,
  req: FastifyRequest,
  header: string | undefined,
): Promise<Caller | null> {
  const token = header ? /^Bearer\s+(\S+)$/i.exec(header)?.[1] : undefined
  if (!token) return null
  if (tokenEquals(token, app.adminToken)) return { kind: 'admin' }
  const key = await findProjectKey(app, req, token)
  return key ? { kind: 'project', keyId: key.id, projectId: key.projectId, lastUsedAt: key.lastUsedAt } : null
}

async function findProjectKey(app: FastifyInstance, req: FastifyRequest, token: string) {
  const prefix = parseKeyPrefix(token)
  if (!prefix) return null
  // the row, not the verdict, is cached: the secret is checked on every request; a revoke drops the cache
  const key = await app.lookups.get(req, `key:${prefix}`, () =>
    app.db.apiKey.findUnique({
      where: { prefix },
      select: { id: true, projectId: true, secretHash: true, revokedAt: true, lastUsedAt: true },
    }),
  )
  if (!key || key.revokedAt || !keyMatches(token, key.secretHash)) return null
  return key
}

/** last_used_at is precise to a minute: at most one write per key per minute, never one per request. */
export const LAST_USED_RESOLUTION_MS = 60_000

// When this process last recorded a key's use: the cached key row keeps the last_used_at it was read with.
const touched = new Map<string, number>()

/** Forgets which keys this process recorded, as a minute passing would (tests that move last_used_at back). */
export function forgetRecordedUses(): void {
  touched.clear()
}

function touchLastUsed(app: FastifyInstance, caller: Extract<Caller, { kind: 'project' }>) {
  const now = Date.now()
  const last = Math.max(caller.lastUsedAt?.getTime() ?? 0, touched.get(caller.keyId) ?? 0)
  if (now - last < LAST_USED_RESOLUTION_MS) return
  if (touched.size >= 100_000) touched.clear()
  touched.set(caller.keyId, now)
  const stale = new Date(now - LAST_USED_RESOLUTION_MS)
  // Conditional, so concurrent requests (and other API processes) write once; off the request's path.
  app.db.apiKey
    .updateMany({
      where: { id: caller.keyId, OR: [{ lastUsedAt: null }, { lastUsedAt: { lt: stale } }] },
      data: { lastUsedAt: new Date(now) },
    })
    .catch((err: Error) => app.log.debug({ err: err.message }, 'could not record last_used_at'))
}
